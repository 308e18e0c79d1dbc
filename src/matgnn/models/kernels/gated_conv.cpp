// CGCNN's gated message sum in one pass over each atom's incoming edges (CPU).
//
//   out[i] = sum_{e: dst(e) = i} sigmoid(f_e) * softplus(c_e),   [f_e | c_e] = yc[i] + yn[src(e)] + ye[e]
//
// Edges are sorted by their centre atom (CSR: ptr[i]..ptr[i+1] are atom i's edges), so every atom's sum
// is owned by one thread: no atomics, and the gate of an edge never leaves the cache. The backward pass
// recomputes the gate instead of keeping it, and returns the gradient of the per-edge term (which is
// also the gradient of yn's gathered rows); the centre term's gradient is summed per atom here.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>

namespace {

// sigmoid and softplus from one exp(-|x|) each, which never overflows: no clamping, no infinity.
template <typename T>
inline T sigmoid(T x) {
  T t = std::exp(x < T(0) ? x : -x);
  return (x < T(0) ? t : T(1)) / (T(1) + t);
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)); its derivative sigmoid(x) from the same exp
template <typename T>
inline T softplus(T x, T* derivative) {
  T t = std::exp(x < T(0) ? x : -x);
  *derivative = (x < T(0) ? t : T(1)) / (T(1) + t);
  return (x > T(0) ? x : T(0)) + std::log1p(t);
}

template <typename T>
void forward_kernel(const T* yc, const T* yn, const T* ye, const int64_t* src, const int64_t* ptr, T* out,
                    int64_t n, int64_t c) {
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* o = out + i * c;
      for (int64_t k = 0; k < c; ++k) o[k] = T(0);
      const T* ci = yc + i * 2 * c;
      for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
        const T* nj = yn + src[e] * 2 * c;
        const T* ee = ye + e * 2 * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          T f = ci[k] + nj[k] + ee[k];
          T g = ci[c + k] + nj[c + k] + ee[c + k];
          T unused;
          o[k] += sigmoid(f) * softplus(g, &unused);
        }
      }
    }
  });
}

template <typename T>
void backward_kernel(const T* grad, const T* yc, const T* yn, const T* ye, const int64_t* src,
                     const int64_t* ptr, T* dyc, T* dye, int64_t n, int64_t c) {
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* go = grad + i * c;
      const T* ci = yc + i * 2 * c;
      T* dc = dyc + i * 2 * c;
      for (int64_t k = 0; k < 2 * c; ++k) dc[k] = T(0);
      for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
        const T* nj = yn + src[e] * 2 * c;
        const T* ee = ye + e * 2 * c;
        T* de = dye + e * 2 * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          T f = ci[k] + nj[k] + ee[k];
          T g = ci[c + k] + nj[c + k] + ee[c + k];
          T sf = sigmoid(f), sg;
          T sp = softplus(g, &sg);
          T df = go[k] * sp * sf * (T(1) - sf);  // d/df sigmoid(f) softplus(g)
          T dg = go[k] * sf * sg;                // softplus' = sigmoid
          de[k] = df;
          de[c + k] = dg;
          dc[k] += df;
          dc[c + k] += dg;
        }
      }
    }
  });
}

void check(const torch::Tensor& yc, const torch::Tensor& yn, const torch::Tensor& ye, const torch::Tensor& src,
           const torch::Tensor& ptr) {
  TORCH_CHECK(yc.device().is_cpu() && yc.is_contiguous() && yn.is_contiguous() && ye.is_contiguous(),
              "gated_conv: contiguous CPU tensors expected");
  TORCH_CHECK(yc.scalar_type() == yn.scalar_type() && yc.scalar_type() == ye.scalar_type(),
              "gated_conv: one dtype expected");
  TORCH_CHECK(src.scalar_type() == torch::kLong && ptr.scalar_type() == torch::kLong && src.is_contiguous()
              && ptr.is_contiguous(), "gated_conv: int64 indices expected");
  TORCH_CHECK(yc.dim() == 2 && yc.size(1) % 2 == 0 && yn.sizes() == yc.sizes() && ye.size(1) == yc.size(1)
              && ptr.numel() == yc.size(0) + 1 && src.numel() == ye.size(0), "gated_conv: shapes disagree");
}

}  // namespace

torch::Tensor gated_sum_forward(torch::Tensor yc, torch::Tensor yn, torch::Tensor ye, torch::Tensor src,
                                torch::Tensor ptr) {
  check(yc, yn, ye, src, ptr);
  const int64_t n = yc.size(0), c = yc.size(1) / 2;
  auto out = torch::empty({n, c}, yc.options());
  AT_DISPATCH_FLOATING_TYPES(yc.scalar_type(), "gated_sum_forward", [&] {
    forward_kernel<scalar_t>(yc.data_ptr<scalar_t>(), yn.data_ptr<scalar_t>(), ye.data_ptr<scalar_t>(),
                             src.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), n, c);
  });
  return out;
}

std::vector<torch::Tensor> gated_sum_backward(torch::Tensor grad, torch::Tensor yc, torch::Tensor yn,
                                              torch::Tensor ye, torch::Tensor src, torch::Tensor ptr) {
  check(yc, yn, ye, src, ptr);
  grad = grad.contiguous();
  const int64_t n = yc.size(0), c = yc.size(1) / 2;
  auto dyc = torch::empty_like(yc);
  auto dye = torch::empty_like(ye);
  AT_DISPATCH_FLOATING_TYPES(yc.scalar_type(), "gated_sum_backward", [&] {
    backward_kernel<scalar_t>(grad.data_ptr<scalar_t>(), yc.data_ptr<scalar_t>(), yn.data_ptr<scalar_t>(),
                              ye.data_ptr<scalar_t>(), src.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(),
                              dyc.data_ptr<scalar_t>(), dye.data_ptr<scalar_t>(), n, c);
  });
  return {dyc, dye};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &gated_sum_forward, "gated message sum (CSR by centre atom)");
  m.def("backward", &gated_sum_backward, "its gradients: centre term, per-edge term");
}
