//! Candle custom ops that route CPU f32 tensors to the kernels and wire up autograd.
//!
//! One graph node covers convolution, bias and ReLU together: candle's backward pass
//! allocates and adds a zero gradient per node, so fewer nodes over activation-sized tensors
//! is itself a speedup, on top of skipping the separate bias and ReLU sweeps.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::geometry::{Conv2dConfig, Geometry};
use super::pool::PoolGeometry;
use super::{conv, pool};

/// The contiguous f32 view of a custom-op operand.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what} must be contiguous"),
    }
}

/// Fails unless `dims` is exactly `want`; the gradient ops get their shapes from a saved
/// geometry, so a mismatch here would mean reading past the data.
fn expect_dims(what: &str, dims: &[usize], want: &[usize]) -> Result<()> {
    if dims != want {
        bail!("{what} has shape {dims:?}, expected {want:?}")
    }
    Ok(())
}

/// Convolution plus optional bias and ReLU.
pub(crate) struct Conv {
    pub cfg: Conv2dConfig,
    pub relu: bool,
}

impl Conv {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(x.1.dims(), w.1.dims(), &self.cfg)?;
        let xs = slice(x.0, x.1, "conv2d input")?;
        let ws = slice(w.0, w.1, "conv2d weight")?;
        let bias = match b {
            Some((s, l)) => {
                expect_dims("conv2d bias", l.dims(), &[g.c_out])?;
                Some(slice(s, l, "conv2d bias")?)
            }
            None => None,
        };
        let out = conv::forward(xs, ws, bias, &g, self.relu);
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.c_out, g.oh, g.ow))))
    }

    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Leaves that are neither variables nor results of other ops (the input images)
        // need no gradient; skipping it saves a full convolution per step.
        let dx = if x.track_op() {
            let op = GradInput { cfg: self.cfg, relu: self.relu, x_dims: x.dims().to_vec() };
            Some(grad.apply_op3_no_bwd(w, res, &op)?)
        } else {
            None
        };
        let want_w = w.track_op();
        let want_b = b.is_some_and(|b| b.track_op());
        if !want_w && !want_b {
            return Ok((dx, None, None));
        }
        let op = GradWeight { cfg: self.cfg, relu: self.relu, w_dims: w.dims().to_vec(), with_bias: want_b };
        let flat = x.apply_op3_no_bwd(&grad, res, &op)?;
        let w_len = w.elem_count();
        let dw = if want_w { Some(flat.narrow(0, 0, w_len)?.reshape(w.shape())?) } else { None };
        let db = if want_b { Some(flat.narrow(0, w_len, w.dims()[0])?) } else { None };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "tandem-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, None, res, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "tandem-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, Some(b), res, grad)
    }
}

/// Input gradient: operands are (output gradient, weight, forward output).
struct GradInput {
    cfg: Conv2dConfig,
    relu: bool,
    x_dims: Vec<usize>,
}

impl CustomOp3 for GradInput {
    fn name(&self) -> &'static str {
        "tandem-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(&self.x_dims, l2.dims(), &self.cfg)?;
        let out_dims = [g.n, g.c_out, g.oh, g.ow];
        expect_dims("conv2d output gradient", l1.dims(), &out_dims)?;
        let dy = slice(s1, l1, "conv2d output gradient")?;
        let w = slice(s2, l2, "conv2d weight")?;
        let mask = if self.relu {
            expect_dims("conv2d output", l3.dims(), &out_dims)?;
            Some(slice(s3, l3, "conv2d output")?)
        } else {
            None
        };
        let dx = conv::grad_input(dy, w, mask, &g);
        Ok((CpuStorage::F32(dx), Shape::from(self.x_dims.clone())))
    }
}

/// Weight and bias gradients, flattened into one tensor: operands are (input, output
/// gradient, forward output).
struct GradWeight {
    cfg: Conv2dConfig,
    relu: bool,
    w_dims: Vec<usize>,
    with_bias: bool,
}

impl CustomOp3 for GradWeight {
    fn name(&self) -> &'static str {
        "tandem-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), &self.w_dims, &self.cfg)?;
        let out_dims = [g.n, g.c_out, g.oh, g.ow];
        expect_dims("conv2d output gradient", l2.dims(), &out_dims)?;
        let x = slice(s1, l1, "conv2d input")?;
        let dy = slice(s2, l2, "conv2d output gradient")?;
        let mask = if self.relu {
            expect_dims("conv2d output", l3.dims(), &out_dims)?;
            Some(slice(s3, l3, "conv2d output")?)
        } else {
            None
        };
        let (mut dw, db) = conv::grad_weight(x, dy, mask, &g, self.with_bias);
        if self.with_bias {
            dw.extend_from_slice(&db);
        }
        let len = dw.len();
        Ok((CpuStorage::F32(dw), Shape::from(len)))
    }
}

/// Max pooling over non-overlapping square windows.
pub(crate) struct MaxPool {
    pub size: usize,
}

/// Checks a pooling input and returns its geometry.
fn pool_geometry(dims: &[usize], k: usize) -> Result<PoolGeometry> {
    let &[n, c, h, w] = dims else { bail!("max_pool2d expects a 4d input, got {dims:?}") };
    if k == 0 || h < k || w < k {
        bail!("max_pool2d window {k} does not fit a {h}x{w} input")
    }
    Ok(PoolGeometry { planes: n * c, h, w, k })
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "tandem-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = pool_geometry(l.dims(), self.size)?;
        let x = slice(s, l, "max_pool2d input")?;
        let out = pool::forward(x, &g);
        let d = l.dims();
        Ok((CpuStorage::F32(out), Shape::from((d[0], d[1], g.oh(), g.ow()))))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(x.apply_op3_no_bwd(res, &grad, &MaxPoolGrad { size: self.size })?))
    }
}

/// Max pooling gradient: operands are (input, forward output, output gradient).
struct MaxPoolGrad {
    size: usize,
}

impl CustomOp3 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "tandem-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = pool_geometry(l1.dims(), self.size)?;
        let d = l1.dims();
        let out_dims = [d[0], d[1], g.oh(), g.ow()];
        expect_dims("max_pool2d output", l2.dims(), &out_dims)?;
        expect_dims("max_pool2d output gradient", l3.dims(), &out_dims)?;
        let x = slice(s1, l1, "max_pool2d input")?;
        let y = slice(s2, l2, "max_pool2d output")?;
        let dy = slice(s3, l3, "max_pool2d output gradient")?;
        let dx = pool::backward(x, y, dy, &g);
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
