"""`melanoma synth`: CycleGAN minority synthesis, fenced by fold.

Per fold k a CycleGAN (models.py, losses.py, loop.py) learns benign -> malignant translation from the training
folds of k only (data.py), and its benign training images are translated into synthetic melanomas written to
train-only shards tagged `source=synthetic:<k>` (writer.py), which `train` mixes into fold k alone
(image/pipeline.py, `train.sources.synthetic`, `train.sources.synthetic_share`). stage.py runs the folds;
commands.py has the CLI.
"""
