# The digits MLP split into 2 pipeline stages (1F1B, 4 microbatches per batch):
#   torchrun --nproc_per_node=2 tools/train.py configs/digits/mlp_pipeline.py --launcher torch
_base_ = './mlp.py'
parallel = dict(pipeline=2)
schedule = dict(type='PipelineSchedule', num_microbatches=4)
model = dict(partition='uniform')
# Every batch must split into 4 equal microbatches: the train set drops its last, smaller
# batch; the 360 test images make 9 batches of 40.
data = dict(train=dict(dataloader=dict(drop_last=True)), test=dict(dataloader=dict(batch_size=40)))
