"""Kaggle and Colab: the Kaggle API and notebooks, where the code runs (environment), wheels, `melanoma doctor`."""
