# Everything a run needs besides model, data and optimisation: hooks, seed, logging.
# Hooks that write metrics (LossHook, AccuracyHook) run before the ones that read them.
hooks = [
    dict(type='LossHook'),
    dict(type='AccuracyHook'),
    dict(type='LogMetricByEpochHook'),
    dict(type='TensorboardHook'),
    dict(type='SaveCheckpointHook', interval=1),
]
seed = 1024
work_dir = None          # default: work_dirs/<config file name>
schedule = dict(type='NoPipelineSchedule')
parallel = dict(pipeline=1, data=None)   # data=None: world_size / pipeline
amp = None               # None | 'bf16' | 'fp16'
gradient_accumulation = 1
clip_grad_norm = 0.0
logging = dict(level='INFO', progress=True)
