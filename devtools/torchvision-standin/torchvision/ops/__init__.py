"""Stand-in: only `torchvision.ops.misc.FrozenBatchNorm2d`."""
