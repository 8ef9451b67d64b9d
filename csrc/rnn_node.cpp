// Schemas of the fused RNN search-cell node (the autograd-aware op is fastdarts::rnn_node in
// fastdarts/ops/rnn_node.py, which checks the inputs before calling these).
//   rnn_node_forward(ch, states, probs) -> s
//       s = sum_j sum_f probs[j, f] * (st_j + sigmoid(c_j) * (f(h_j) - st_j)),
//       f in (tanh, relu, sigmoid, identity) = probs columns 1..4 (column 0, 'none', unread)
//   rnn_node_backward(grad, ch, states, probs) -> (d_ch, d_states, d_probs)
// ch: [n, B, 2H] (c = ch[..., :H], h = ch[..., H:]), states: [n, B, H], one floating dtype
// (half/bfloat16/float/double), any strides; probs: [n, 5], any floating dtype; grad: [B, H].
// s, d_ch, d_states come back contiguous in ch's dtype; d_probs [n, 5] in probs' dtype,
// column 0 zero, summed from fixed-order per-block partials (deterministic, no atomics).
// Accumulation in float (double for double).  Implementation: cuda/rnn_node_cuda.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastdarts_C, m) {
  m.def("rnn_node_forward(Tensor ch, Tensor states, Tensor probs) -> Tensor");
  m.def("rnn_node_backward(Tensor grad, Tensor ch, Tensor states, Tensor probs) "
        "-> (Tensor, Tensor, Tensor)");
}
