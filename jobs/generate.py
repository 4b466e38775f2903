"""spark-submit entry point for the `generate` stage: `spark-submit jobs/generate.py --env local [--set KEY=VALUE]`."""

import sys

from shoprec.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("generate"))
