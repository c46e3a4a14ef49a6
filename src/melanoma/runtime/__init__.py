"""Where the code runs: the place (Kaggle, Colab, elsewhere) and its paths, the machine, the Keras backend and
devices, the session-time budget. Below the data layer: it knows no stage."""
