// Fused CPU kernels of two gated convolutions, each one pass over every node's incoming edges.
//
// 1. CGCNN's gated message sum:
//
//   out[i] = sum_{e: dst(e) = i} sigmoid(f_e) * softplus(c_e),   [f_e | c_e] = yc[i] + yn[src(e)] + ye[e]
//
// Edges are sorted by their centre atom (CSR: ptr[i]..ptr[i+1] are atom i's edges), so every atom's sum
// is owned by one thread: no atomics, and the gate of an edge never leaves the cache. The backward pass
// recomputes the gate instead of keeping it, and returns the gradient of the per-edge term (which is
// also the gradient of yn's gathered rows); the centre term's gradient is summed per atom here.
//
// 2. The edge-gated convolution of ALIGNN-style models (Bresson & Laurent's, in ALIGNN's residual form),
//    with the node products xw = [A x | B x | U x | V x] (one row of 4C per node) and the edge term ye = C y:
//
//   m_e = A x_i + B x_j + ye_e,   s_e = sigmoid(m_e),   (dst(e) = i, src(e) = j)
//   h_i = U x_i + (sum_e s_e V x_j) / (sum_e s_e + eps)
//
//    Returns m (the edge update reads it) and h; keeps den_i = sum_e s_e + eps and q_i = h_i - U x_i for the
//    backward pass, which recomputes s_e from m and writes the gradient of m (also ye's) and, per edge, the
//    gradients of the gathered rows B x_j and V x_j (summed onto the sources outside, by index_add).
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

template <typename T>
void edge_gated_forward_kernel(const T* xw, const T* ye, const int64_t* src, const int64_t* ptr, T* m, T* h,
                               T* den, T* q, int64_t n, int64_t c, T eps) {
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* xi = xw + i * 4 * c;
      T* num = q + i * c;
      T* d = den + i * c;
      for (int64_t k = 0; k < c; ++k) { num[k] = T(0); d[k] = T(0); }
      for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
        const T* xj = xw + src[e] * 4 * c;
        const T* ee = ye + e * c;
        T* me = m + e * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          T v = xi[k] + xj[c + k] + ee[k];
          T s = sigmoid(v);
          me[k] = v;
          num[k] += s * xj[3 * c + k];
          d[k] += s;
        }
      }
      T* hi = h + i * c;
#pragma omp simd
      for (int64_t k = 0; k < c; ++k) {
        d[k] += eps;
        num[k] /= d[k];
        hi[k] = xi[2 * c + k] + num[k];
      }
    }
  });
}

// gm: the gradient of m from outside (null: m was not used); writes dm (E x C: m's and ye's gradient), dsrc
// (E x 2C: per edge, the gradients of the gathered B x_j and V x_j) and dxw's A and U columns (the rest: 0).
template <typename T>
void edge_gated_backward_kernel(const T* gh, const T* gm, const T* xw, const T* m, const T* den, const T* q,
                                const int64_t* src, const int64_t* ptr, T* dm, T* dsrc, T* dxw, int64_t n,
                                int64_t c) {
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* g = gh + i * c;
      const T* d = den + i * c;
      const T* qi = q + i * c;
      T* dx = dxw + i * 4 * c;
      for (int64_t k = 0; k < c; ++k) {
        dx[k] = T(0);
        dx[c + k] = T(0);
        dx[2 * c + k] = g[k];
        dx[3 * c + k] = T(0);
      }
      for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) {
        const T* xj = xw + src[e] * 4 * c;
        const T* me = m + e * c;
        const T* ge = gm ? gm + e * c : nullptr;
        T* de = dm + e * c;
        T* ds = dsrc + e * 2 * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          T s = sigmoid(me[k]);
          T gn = g[k] / d[k];                 // d h / d num
          T gs = gn * (xj[3 * c + k] - qi[k]);  // d h / d s_e = gn * V x_j + d h / d den
          T total = gs * s * (T(1) - s) + (ge ? ge[k] : T(0));
          de[k] = total;
          ds[k] = total;
          ds[c + k] = gn * s;
          dx[k] += total;
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

void check_edge_gated(const torch::Tensor& xw, const torch::Tensor& ye, const torch::Tensor& src,
                      const torch::Tensor& ptr) {
  TORCH_CHECK(xw.device().is_cpu() && xw.is_contiguous() && ye.is_contiguous() && xw.scalar_type() == ye.scalar_type(),
              "edge_gated: contiguous CPU tensors of one dtype expected");
  TORCH_CHECK(src.scalar_type() == torch::kLong && ptr.scalar_type() == torch::kLong && src.is_contiguous()
              && ptr.is_contiguous(), "edge_gated: int64 indices expected");
  TORCH_CHECK(xw.dim() == 2 && xw.size(1) % 4 == 0 && ye.dim() == 2 && ye.size(1) == xw.size(1) / 4
              && ptr.numel() == xw.size(0) + 1 && src.numel() == ye.size(0), "edge_gated: shapes disagree");
}

std::vector<torch::Tensor> edge_gated_forward(torch::Tensor xw, torch::Tensor ye, torch::Tensor src,
                                              torch::Tensor ptr, double eps) {
  check_edge_gated(xw, ye, src, ptr);
  const int64_t n = xw.size(0), c = xw.size(1) / 4;
  auto m = torch::empty_like(ye);
  auto h = torch::empty({n, c}, xw.options());
  auto den = torch::empty({n, c}, xw.options());
  auto q = torch::empty({n, c}, xw.options());
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "edge_gated_forward", [&] {
    edge_gated_forward_kernel<scalar_t>(xw.data_ptr<scalar_t>(), ye.data_ptr<scalar_t>(), src.data_ptr<int64_t>(),
                                        ptr.data_ptr<int64_t>(), m.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                                        den.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), n, c,
                                        static_cast<scalar_t>(eps));
  });
  return {m, h, den, q};
}

// gm: m's gradient, or an empty tensor where m was not used. Returns dm, dsrc (E x 2C) and dxw (A and U columns).
std::vector<torch::Tensor> edge_gated_backward(torch::Tensor gh, torch::Tensor gm, torch::Tensor xw, torch::Tensor m,
                                               torch::Tensor den, torch::Tensor q, torch::Tensor src,
                                               torch::Tensor ptr) {
  check_edge_gated(xw, m, src, ptr);
  gh = gh.contiguous();
  const bool has_gm = gm.numel() > 0;
  if (has_gm) gm = gm.contiguous();
  TORCH_CHECK(gh.sizes() == den.sizes() && q.sizes() == den.sizes() && den.size(0) == xw.size(0)
              && (!has_gm || gm.sizes() == m.sizes()) && gh.scalar_type() == xw.scalar_type()
              && (!has_gm || gm.scalar_type() == xw.scalar_type()), "edge_gated: gradient shapes disagree");
  const int64_t n = xw.size(0), c = xw.size(1) / 4, e = m.size(0);
  auto dm = torch::empty_like(m);
  auto dsrc = torch::empty({e, 2 * c}, m.options());
  auto dxw = torch::empty_like(xw);
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "edge_gated_backward", [&] {
    edge_gated_backward_kernel<scalar_t>(gh.data_ptr<scalar_t>(), has_gm ? gm.data_ptr<scalar_t>() : nullptr,
                                         xw.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), den.data_ptr<scalar_t>(),
                                         q.data_ptr<scalar_t>(), src.data_ptr<int64_t>(), ptr.data_ptr<int64_t>(),
                                         dm.data_ptr<scalar_t>(), dsrc.data_ptr<scalar_t>(), dxw.data_ptr<scalar_t>(),
                                         n, c);
  });
  return {dm, dsrc, dxw};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &gated_sum_forward, "gated message sum (CSR by centre atom)");
  m.def("backward", &gated_sum_backward, "its gradients: centre term, per-edge term");
  m.def("edge_gated_forward", &edge_gated_forward, "edge-gated convolution's sums (CSR by target node)");
  m.def("edge_gated_backward", &edge_gated_backward, "their gradients");
}
