"""The `tabular` stage: metadata-only models on the CNNs' folds, one recipe per competition (the profile's
`tabular`): SIIM-ISIC 2020's metadata models (sex, age, anatomical site, patient context, image size and colour
statistics), ISIC 2024's boosted trees on the 3D-TBP lesion measurements; either with image runs' out-of-fold
predictions as features.

    features   the column lists, the patient-context ("ugly duckling") features, the ColumnTransformers
    imagestats file size and colour statistics from the JPEGs or the TFRecords
    sources    joining image sizes and image statistics to the metadata rows
    models     the estimators and the registry TABULAR_MODELS (mlp_smote, logreg, gbm, lgbm, hgb)
    stage      the 2020 fold loop, the choice among models (auto, all), RECIPES and run_tabular
    isic2024   the ISIC 2024 feature builder (ISIC2024Features)
    boosters   the ISIC 2024 models: SeededBoosters over lgbm, hgb, xgboost, catboost
    tbp        the ISIC 2024 recipe: features, fold loop on pAUC, run folder
    image_runs image runs' predictions as features (tabular.image_runs)
    choice     what the recipes share: ModelRun, the best model, stale model folders
    commands   the `tabular` command (flags, action, output plan): imports nothing heavy

The names below load lazily (PEP 562), so `import melanoma.tabular.commands` never imports scikit-learn.
"""

_HOMES = {  # submodule -> the names it defines
    "features": ("CATEGORICAL COLOR_CONTEXT COLOR_STATS CONTEXT FEATURE_COLUMNS FILE_CONTEXT FILE_SIZE IMAGE_COLUMNS "
                 "META MISSING NUMERIC SIZE SIZE_CONTEXT context_columns feature_table make_features make_gbm_features "
                 "patient_context"),
    "models": ("GROUPED_MODELS TABULAR_MODELS KerasMLPClassifier LightGBMClassifier RecordingSMOTE "
               "TunedHGBClassifier build_pipeline build_tabular_model inner_split smote_plan"),
    "sources": ("SIZES_CSV STATS_CSV add_image_sizes add_image_stats input_columns"),
    "stage": ("gbm_importance model_names run_tabular"),
    "choice": ("ModelRun best_of remove_stale_model_dirs"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names.split()}
_WHERE["ConfigError"] = None

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name == "ConfigError":
        from melanoma.errors import ConfigError

        return ConfigError
    if name in _WHERE:
        # Import statements (not importlib), so import-linter sees them; all of them load scikit-learn anyway.
        import melanoma.tabular.choice
        import melanoma.tabular.features
        import melanoma.tabular.models
        import melanoma.tabular.sources
        import melanoma.tabular.stage

        return getattr(getattr(melanoma.tabular, _WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
