// One forward and backward pass of a dream net, for lab/blasbench.py: what a BLAS computes,
// as bits, with any Caffe build (the caffe tool can time a net but not show its blobs).
//
//     onepass NET.prototxt END OUT.raw
//
// The weights are Caffe's fillers under a fixed seed; the input is a fixed pattern; END's diff
// is set to its data (the notebook's objective_L2) before the backward pass. OUT gets END's
// data, then data's diff, as raw float32.
#include <cstdio>
#include <string>

#include "caffe/caffe.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: onepass NET.prototxt END OUT.raw\n");
    return 2;
  }
  caffe::Caffe::set_mode(caffe::Caffe::CPU);
  caffe::Caffe::set_random_seed(1);
  caffe::Net<float> net(argv[1], caffe::TEST);
  caffe::Blob<float>* data = net.blob_by_name("data").get();
  caffe::Blob<float>* end = net.blob_by_name(argv[2]).get();
  float* x = data->mutable_cpu_data();
  for (int i = 0; i < data->count(); ++i) x[i] = static_cast<float>(i % 251) - 125.0f;
  net.Forward();
  caffe::caffe_copy(end->count(), end->cpu_data(), end->mutable_cpu_diff());
  net.Backward();
  std::FILE* out = std::fopen(argv[3], "wb");
  if (out == NULL) return 1;
  std::fwrite(end->cpu_data(), sizeof(float), end->count(), out);
  std::fwrite(data->cpu_diff(), sizeof(float), data->count(), out);
  return std::fclose(out) == 0 ? 0 : 1;
}
