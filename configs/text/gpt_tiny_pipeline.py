# The tiny GPT over 2 pipeline stages (embedding + block | block + head), 1F1B with 4 microbatches:
#   torchrun --nproc_per_node=2 tools/train.py configs/text/gpt_tiny_pipeline.py --launcher torch
_base_ = './gpt_tiny.py'
parallel = dict(pipeline=2)
schedule = dict(type='PipelineSchedule', num_microbatches=4)
model = dict(partition='parameters')  # embedding + block | block + norm + head: 60.7k | 56.8k parameters
# Every test batch must split into 4 equal microbatches, so the last, smaller one is dropped.
# batch_size=4 leaves out the fewest test sequences, fewer than 4 whatever the corpus: 2 of the
# 726 with Python 3.11's pydoc text (batch_size=128 left out 86); a warning gives the count.
data = dict(test=dict(dataloader=dict(batch_size=4, drop_last=True)))
