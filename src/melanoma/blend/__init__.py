"""The `blend` stage: the runs' predictions, ranked and mixed with weights fitted on their OOF predictions, into
one submission (stage.py, whose docstring gives the methods; weights.py: the weight search; commands.py: the
`blend` command). commands.py imports nothing heavy, so the names of stage.py (run_blend, blend_runs, combine,
to_ranks, fit_weights, ...) load lazily (PEP 562): `from melanoma.blend import run_blend` imports SciPy,
`import melanoma.blend.commands` does not.
"""

SUBMODULES = ("stage", "weights", "commands")  # loaded by the import system, never through __getattr__


def __getattr__(name: str):
    if not name.startswith("_") and name not in SUBMODULES:
        from melanoma.blend import stage  # an import statement, so import-linter sees it

        if hasattr(stage, name):
            return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
