# vocab_size=None: filled in from the training dataset's vocab_size by initialize().
model = dict(type='TinyGPT', vocab_size=None, block_size=64, n_layer=2, n_head=4, n_embd=64, dropout=0.0)
loss = dict(type='SequenceCrossEntropyLoss')
