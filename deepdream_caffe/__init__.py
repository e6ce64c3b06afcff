"""DeepDream, faithful to google/deepdream dream.ipynb, on pristine BVLC Caffe."""
