# The tiny GPT over 2 pipeline stages (embedding + block | block + head), 1F1B with 4 microbatches:
#   torchrun --nproc_per_node=2 tools/train.py configs/text/gpt_tiny_pipeline.py --launcher torch
_base_ = './gpt_tiny.py'
parallel = dict(pipeline=2)
schedule = dict(type='PipelineSchedule', num_microbatches=4)
model = dict(partition='uniform')
data = dict(test=dict(dataloader=dict(drop_last=True)))
