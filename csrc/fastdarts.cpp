// fastdarts._C: the compiled ops of fastdarts, registered under torch.ops.fastdarts_C.
//
// This file holds the library definition and the Python module entry point.
// Each op family declares its schemas in its own csrc/<family>.cpp with
// TORCH_LIBRARY_FRAGMENT and registers per-device kernels from csrc/cpu and
// csrc/cuda with TORCH_LIBRARY_IMPL.  The public, autograd-aware ops live in
// Python (fastdarts/ops), which call these through torch.ops.fastdarts_C.
#include <Python.h>
#include <torch/library.h>

namespace fastdarts {

bool built_with_cuda() {
#ifdef FASTDARTS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace fastdarts

TORCH_LIBRARY(fastdarts_C, m) {
  m.def("built_with_cuda() -> bool", &fastdarts::built_with_cuda);
}

// `import fastdarts._C` loads this library; its static initialisers register the ops.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
