from shapetrace.cli import run

run()
