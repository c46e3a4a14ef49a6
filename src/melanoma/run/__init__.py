"""`melanoma run`: the stages chained from one config (pipeline.py), through the one stage registry (stages.py);
commands.py declares the `run` command and imports nothing heavy, so the names of pipeline.py (run_pipeline,
format_summary, adopt_previous_session, adopt_finished_folds, test_auc) load lazily (PEP 562)."""

def __getattr__(name: str):
    if not name.startswith("_") and name not in ("pipeline", "stages", "commands"):  # submodules: the import system
        from melanoma.run import pipeline  # an import statement, so import-linter sees it

        if hasattr(pipeline, name):
            return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
