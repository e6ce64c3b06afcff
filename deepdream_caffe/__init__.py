"""DeepDream, faithful to google/deepdream dream.ipynb, on pristine BVLC Caffe."""

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it from here)
