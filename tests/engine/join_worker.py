"""One rank of a torchrun job joining its process group as launchers/ddp.py does, after ``argv[1]`` seconds; it
sums a 1 over the ranks, prints the world size, then dies as a SIGKILLed worker does: nothing cleaned up, its
keys left in the store. Run with torchrun's environment set by the test."""
import os
import signal
import sys
import time

import torch

from train.engine.distributed import torchrun_ddp

time.sleep(float(sys.argv[1]))
dist = torchrun_ddp("gloo", "cpu", sync_bn=False)
print(int(dist.all_reduce_sum(torch.ones(1)).item()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
