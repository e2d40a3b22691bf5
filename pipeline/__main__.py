"""python -m pipeline: train one job or, with --multirun, a sweep. See pipeline/cli.py."""

from pipeline.cli import main

if __name__ == "__main__":
    main()
