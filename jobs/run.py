"""spark-submit entry point for the `run` stage: `spark-submit jobs/run.py --env local [--set KEY=VALUE]`."""

import sys

from shoprec.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("run"))
