"""The `tabular` stage: metadata-only models (sex, age, anatomical site, patient context, image size and
colour statistics) on the CNNs' folds.

    features   the column lists, the patient-context ("ugly duckling") features, the ColumnTransformers
    imagestats file size and colour statistics from the JPEGs or the TFRecords
    sources    joining image sizes and image statistics to the metadata rows
    models     the estimators and the registry TABULAR_MODELS (mlp_smote, logreg, gbm, lgbm, hgb)
    stage      the fold loop, the choice among models (auto, all) and run_tabular
"""

from melanoma.errors import ConfigError
from melanoma.tabular.features import (CATEGORICAL, COLOR_CONTEXT, COLOR_STATS, CONTEXT, FEATURE_COLUMNS,
                                       FILE_CONTEXT, FILE_SIZE, IMAGE_COLUMNS, META, MISSING, NUMERIC, SIZE,
                                       SIZE_CONTEXT, context_columns, feature_table, make_features,
                                       make_gbm_features, patient_context)
from melanoma.tabular.models import (GROUPED_MODELS, TABULAR_MODELS, KerasMLPClassifier, LightGBMClassifier,
                                     RecordingSMOTE, TunedHGBClassifier, build_pipeline, build_tabular_model,
                                     inner_split, smote_plan)
from melanoma.tabular.sources import SIZES_CSV, STATS_CSV, add_image_sizes, add_image_stats, input_columns
from melanoma.tabular.stage import ModelRun, gbm_importance, model_names, run_tabular

__all__ = [
    "CATEGORICAL", "COLOR_CONTEXT", "COLOR_STATS", "CONTEXT", "FEATURE_COLUMNS", "FILE_CONTEXT", "FILE_SIZE",
    "IMAGE_COLUMNS", "META", "MISSING", "NUMERIC", "SIZE", "SIZE_CONTEXT", "context_columns", "feature_table",
    "make_features", "make_gbm_features", "patient_context", "GROUPED_MODELS", "TABULAR_MODELS",
    "KerasMLPClassifier", "LightGBMClassifier", "RecordingSMOTE", "TunedHGBClassifier", "build_pipeline",
    "build_tabular_model", "inner_split", "smote_plan", "SIZES_CSV", "STATS_CSV", "add_image_sizes",
    "add_image_stats", "input_columns", "ModelRun", "gbm_importance", "model_names", "run_tabular", "ConfigError",
]
