//! Candle custom ops that route CPU f32 tensors to the kernels and wire up autograd.
//!
//! One graph node covers convolution, bias and ReLU together: candle's backward pass
//! allocates and adds a zero gradient per node, so fewer nodes over activation-sized tensors
//! is itself a speedup, on top of skipping the separate bias and ReLU sweeps.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::geometry::{Conv2dConfig, Geometry};
use super::group_norm::{self, GroupGeometry, GroupStats};
use super::norm::{self, NormGeometry};
use super::packed_gemm::Kernel;
use super::pool::PoolGeometry;
use super::{conv, eltwise, pool};

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
        // The ReLU's own gradient first, once, so both convolution gradients read plain data.
        let grad = if self.relu { grad.apply_op2_no_bwd(res, &ReluGrad)? } else { grad };
        conv_grads(self.cfg, x, w, b, &grad)
    }
}

/// Gradients of a plain convolution (no activation) for the operands that track them,
/// given the gradient `dy` of its output.
fn conv_grads(
    cfg: Conv2dConfig,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    // Leaves that are neither variables nor results of other ops (the input images) need no
    // gradient; skipping it saves a full convolution per step.
    let dx = if x.track_op() {
        let op = GradInput { cfg, x_dims: x.dims().to_vec() };
        Some(dy.apply_op2_no_bwd(w, &op)?)
    } else {
        None
    };
    let want_w = w.track_op();
    let want_b = b.is_some_and(|b| b.track_op());
    if !want_w && !want_b {
        return Ok((dx, None, None));
    }
    let op = GradWeight { cfg, w_dims: w.dims().to_vec(), with_bias: want_b };
    let flat = x.apply_op2_no_bwd(dy, &op)?;
    let w_len = w.elem_count();
    let dw = if want_w { Some(flat.narrow(0, 0, w_len)?.reshape(w.shape())?) } else { None };
    let db = if want_b { Some(flat.narrow(0, w_len, w.dims()[0])?) } else { None };
    Ok((dx, dw, db))
}

/// An activation saved for the backward pass, with its shape.
pub(crate) type Kept = (std::sync::Arc<Vec<f32>>, Vec<usize>);

/// Convolution, bias and optional ReLU, then non-overlapping max pooling, as one graph node.
///
/// The full activation never becomes a tensor: inference pools it while it is in cache, and
/// training keeps it inside the op for the backward pass, which routes the pooled gradient
/// through the pooling and the ReLU in one sweep.
pub(crate) struct ConvPool {
    pub cfg: Conv2dConfig,
    pub relu: bool,
    pub size: usize,
    /// Whether any operand tracks gradients, so the activation must be kept.
    pub keep: bool,
    /// The activation `[n, c_out, oh, ow]` from the forward pass, when kept.
    pub activation: std::sync::Mutex<Option<Kept>>,
}

impl ConvPool {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(x.1.dims(), w.1.dims(), &self.cfg)?;
        if self.size == 0 || g.oh < self.size || g.ow < self.size {
            bail!("max_pool2d window {} does not fit a {}x{} convolution output", self.size, g.oh, g.ow)
        }
        let xs = slice(x.0, x.1, "conv2d input")?;
        let ws = slice(w.0, w.1, "conv2d weight")?;
        let bias = match b {
            Some((s, l)) => {
                expect_dims("conv2d bias", l.dims(), &[g.c_out])?;
                Some(slice(s, l, "conv2d bias")?)
            }
            None => None,
        };
        let (pooled, act) = conv::forward_pooled(xs, ws, bias, &g, self.relu, self.size, self.keep);
        if let Some(act) = act {
            let mut slot =
                self.activation.lock().map_err(|_| candle_core::Error::Msg("activation lock poisoned".into()))?;
            *slot = Some((std::sync::Arc::new(act), vec![g.n, g.c_out, g.oh, g.ow]));
        }
        Ok((CpuStorage::F32(pooled), Shape::from((g.n, g.c_out, g.oh / self.size, g.ow / self.size))))
    }

    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let kept =
            self.activation.lock().map_err(|_| candle_core::Error::Msg("activation lock poisoned".into()))?.clone();
        let Some((act, dims)) = kept else { bail!("the pooled convolution kept no activation for its backward pass") };
        let g = PoolGeometry { planes: dims[0] * dims[1], h: dims[2], w: dims[3], k: self.size };
        let (res, grad) = (res.contiguous()?, grad.contiguous()?);
        let (ys, gs) = (res.flatten_all()?.to_vec1::<f32>()?, grad.flatten_all()?.to_vec1::<f32>()?);
        let dy = pool::backward(&act, &ys, &gs, &g, self.relu);
        let dy = Tensor::from_vec(dy, dims, x.device())?;
        conv_grads(self.cfg, x, w, b, &dy)
    }
}

impl CustomOp2 for ConvPool {
    fn name(&self) -> &'static str {
        "tandem-conv2d-max-pool"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, None, res, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvPool {
    fn name(&self) -> &'static str {
        "tandem-conv2d-bias-max-pool"
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

/// The gradient through a fused ReLU: operands are (output gradient, forward output).
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "tandem-relu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        expect_dims("relu output", l2.dims(), l1.dims())?;
        let dy = slice(s1, l1, "relu output gradient")?;
        let y = slice(s2, l2, "relu output")?;
        let out = eltwise::relu_grad(dy, y);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Input gradient: operands are (output gradient, weight).
struct GradInput {
    cfg: Conv2dConfig,
    x_dims: Vec<usize>,
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "tandem-conv2d-grad-input"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(&self.x_dims, l2.dims(), &self.cfg)?;
        expect_dims("conv2d output gradient", l1.dims(), &[g.n, g.c_out, g.oh, g.ow])?;
        let dy = slice(s1, l1, "conv2d output gradient")?;
        let w = slice(s2, l2, "conv2d weight")?;
        let dx = conv::grad_input(dy, w, &g);
        Ok((CpuStorage::F32(dx), Shape::from(self.x_dims.clone())))
    }
}

/// Weight and bias gradients, flattened into one tensor: operands are (input, output
/// gradient).
struct GradWeight {
    cfg: Conv2dConfig,
    w_dims: Vec<usize>,
    with_bias: bool,
}

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "tandem-conv2d-grad-weight"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), &self.w_dims, &self.cfg)?;
        expect_dims("conv2d output gradient", l2.dims(), &[g.n, g.c_out, g.oh, g.ow])?;
        let x = slice(s1, l1, "conv2d input")?;
        let dy = slice(s2, l2, "conv2d output gradient")?;
        let (mut dw, db) = conv::grad_weight(x, dy, &g, self.with_bias);
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
        let dx = pool::backward(x, y, dy, &g, false);
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Checks a batch-norm input and returns its geometry.
fn norm_geometry(dims: &[usize]) -> Result<NormGeometry> {
    let &[n, c, ref rest @ ..] = dims else { bail!("batch norm expects at least a 2d input, got {dims:?}") };
    Ok(NormGeometry { n, c, plane: rest.iter().product() })
}

/// Per-channel batch mean and biased variance, as a `[2, c]` tensor.
pub(crate) struct BatchStats;

impl CustomOp1 for BatchStats {
    fn name(&self) -> &'static str {
        "tandem-batch-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = norm_geometry(l.dims())?;
        let x = slice(s, l, "batch norm input")?;
        let (mut mean, var) = norm::batch_stats(x, &g);
        mean.extend_from_slice(&var);
        Ok((CpuStorage::F32(mean), Shape::from((2, g.c))))
    }
}

/// Batch normalisation with given batch statistics, then optional ReLU; operands are
/// (input, gamma, beta). The backward pass treats the statistics as functions of the input.
pub(crate) struct BatchNormApply {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    pub relu: bool,
}

impl CustomOp3 for BatchNormApply {
    fn name(&self) -> &'static str {
        "tandem-batch-norm"
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
        let g = norm_geometry(l1.dims())?;
        expect_dims("batch norm weight", l2.dims(), &[g.c])?;
        expect_dims("batch norm bias", l3.dims(), &[g.c])?;
        if self.mean.len() != g.c || self.inv_std.len() != g.c {
            bail!("batch norm statistics cover {} channels, the input has {}", self.mean.len(), g.c)
        }
        let x = slice(s1, l1, "batch norm input")?;
        let gamma = slice(s2, l2, "batch norm weight")?;
        let beta = slice(s3, l3, "batch norm bias")?;
        let y = norm::normalize(x, &g, &self.mean, &self.inv_std, gamma, beta, self.relu);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.mean.len();
        let op = BatchNormGrad {
            mean: self.mean.clone(),
            inv_std: self.inv_std.clone(),
            gamma: gamma.to_vec1()?,
            relu: self.relu,
        };
        let flat = x.apply_op3_no_bwd(res, &grad.contiguous()?, &op)?;
        let len = x.elem_count();
        let dx = if x.track_op() { Some(flat.narrow(0, 0, len)?.reshape(x.shape())?) } else { None };
        let dgamma = if gamma.track_op() { Some(flat.narrow(0, len, c)?) } else { None };
        let dbeta = if beta.track_op() { Some(flat.narrow(0, len + c, c)?) } else { None };
        Ok((dx, dgamma, dbeta))
    }
}

/// Batch-norm gradients, flattened as `[dx..., dgamma..., dbeta...]`: operands are (input,
/// forward output, output gradient).
struct BatchNormGrad {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
    relu: bool,
}

impl CustomOp3 for BatchNormGrad {
    fn name(&self) -> &'static str {
        "tandem-batch-norm-grad"
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
        let g = norm_geometry(l1.dims())?;
        expect_dims("batch norm output", l2.dims(), l1.dims())?;
        expect_dims("batch norm output gradient", l3.dims(), l1.dims())?;
        if self.mean.len() != g.c || self.gamma.len() != g.c {
            bail!("batch norm statistics cover {} channels, the input has {}", self.mean.len(), g.c)
        }
        let x = slice(s1, l1, "batch norm input")?;
        let y = slice(s2, l2, "batch norm output")?;
        let dy = slice(s3, l3, "batch norm output gradient")?;
        let flat = norm::backward(x, y, dy, &g, &self.mean, &self.inv_std, &self.gamma, self.relu);
        let len = flat.len();
        Ok((CpuStorage::F32(flat), Shape::from(len)))
    }
}

/// Checks a group-norm input of shape `dims` with per-channel weight and bias of shapes
/// `gamma` and `beta`, and returns its geometry.
pub(crate) fn group_geometry(dims: &[usize], gamma: &[usize], beta: &[usize], groups: usize) -> Result<GroupGeometry> {
    let &[n, c, ref rest @ ..] = dims else { bail!("group norm expects an input of rank 3 or more, got {dims:?}") };
    if rest.is_empty() {
        bail!("group norm expects an input of rank 3 or more, got {dims:?}")
    }
    if groups == 0 || !c.is_multiple_of(groups) {
        bail!("group norm over {groups} groups cannot split {c} channels")
    }
    expect_dims("group norm weight", gamma, &[c])?;
    expect_dims("group norm bias", beta, &[c])?;
    Ok(GroupGeometry { n, c, groups, plane: rest.iter().product() })
}

/// Group normalisation, then SiLU if asked; operands are (input, gamma, beta). The forward pass
/// keeps each (sample, group)'s mean and inverse deviation for the backward pass, which treats
/// them as functions of the input.
pub(crate) struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
    pub silu: bool,
    /// The statistics of the forward pass.
    pub stats: std::sync::Mutex<Option<GroupStats>>,
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        if self.silu {
            "tandem-group-norm-silu"
        } else {
            "tandem-group-norm"
        }
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
        let g = group_geometry(l1.dims(), l2.dims(), l3.dims(), self.groups)?;
        let x = slice(s1, l1, "group norm input")?;
        let gamma = slice(s2, l2, "group norm weight")?;
        let beta = slice(s3, l3, "group norm bias")?;
        let (y, stats) = group_norm::forward(x, &g, gamma, beta, self.eps, self.silu, Kernel::best());
        let mut slot = self.stats.lock().map_err(|_| candle_core::Error::Msg("statistics lock poisoned".into()))?;
        *slot = Some(stats);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = self.stats.lock().map_err(|_| candle_core::Error::Msg("statistics lock poisoned".into()))?.clone();
        let Some(stats) = stats else { bail!("the group norm kept no statistics for its backward pass") };
        let c = gamma.elem_count();
        let op = GroupNormGrad {
            groups: self.groups,
            stats,
            gamma: gamma.to_vec1()?,
            beta: beta.to_vec1()?,
            silu: self.silu,
        };
        let flat = x.apply_op2_no_bwd(&grad.contiguous()?, &op)?;
        let len = x.elem_count();
        let dx = if x.track_op() { Some(flat.narrow(0, 0, len)?.reshape(x.shape())?) } else { None };
        let dgamma = if gamma.track_op() { Some(flat.narrow(0, len, c)?) } else { None };
        let dbeta = if beta.track_op() { Some(flat.narrow(0, len + c, c)?) } else { None };
        Ok((dx, dgamma, dbeta))
    }
}

/// Group-norm gradients, flattened as `[dx..., dgamma..., dbeta...]`: operands are (input,
/// output gradient).
struct GroupNormGrad {
    groups: usize,
    stats: GroupStats,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    silu: bool,
}

impl CustomOp2 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "tandem-group-norm-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let c = [self.gamma.len()];
        let g = group_geometry(l1.dims(), &c, &[self.beta.len()], self.groups)?;
        expect_dims("group norm output gradient", l2.dims(), l1.dims())?;
        if self.stats.mean.len() != g.n * g.groups || self.stats.rstd.len() != g.n * g.groups {
            bail!("group norm statistics cover {} groups, the input has {}", self.stats.mean.len(), g.n * g.groups)
        }
        let x = slice(s1, l1, "group norm input")?;
        let dy = slice(s2, l2, "group norm output gradient")?;
        let flat = group_norm::backward(x, dy, &g, &self.stats, &self.gamma, &self.beta, self.silu, Kernel::best());
        let len = flat.len();
        Ok((CpuStorage::F32(flat), Shape::from(len)))
    }
}
