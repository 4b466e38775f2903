"""spark-submit entry point: `spark-submit jobs/stream.py --env local [--set K=V]`."""

import sys

from shoprec.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("stream"))
