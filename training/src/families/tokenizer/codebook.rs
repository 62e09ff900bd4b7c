//! How a codebook learns: exponential moving averages of the vectors assigned to each code
//! (van den Oord et al.'s EMA update, with Laplace smoothing of the counts), initialisation from
//! the data, and restarts of dead codes, all as DualToken's code does them.
//!
//! The codebook is the model's own variable; the counts and sums are the run's state, so both are
//! checkpointed. One codebook serves every depth of a stream, so every depth's assignments feed
//! the same averages.

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;
use tandem_runtime::models::rvq::Quantized;

use crate::Result;

/// Smoothing of the counts (added to each before normalising).
const LAPLACE: f64 = 1e-5;

/// A codebook's moving averages.
pub struct CodebookEma {
    codebook: Var,
    counts: Var,
    sums: Var,
    decay: f64,
    dead_threshold: f64,
}

/// Plain rows of a `[m, d]` tensor.
fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
}

impl CodebookEma {
    /// Averages for `codebook` (a `[size, dim]` model variable), starting empty.
    pub fn new(codebook: Var, decay: f64, dead_threshold: f64) -> Result<CodebookEma> {
        let (size, dim) = codebook.dims2()?;
        let device = codebook.device().clone();
        Ok(CodebookEma {
            counts: Var::zeros(size, candle_core::DType::F32, &device)?,
            sums: Var::zeros((size, dim), candle_core::DType::F32, &device)?,
            codebook,
            decay,
            dead_threshold,
        })
    }

    /// The averages as checkpoint state, under `prefix`.
    pub fn state(&self, prefix: &str) -> Vec<(String, Var)> {
        vec![(format!("{prefix}counts"), self.counts.clone()), (format!("{prefix}sums"), self.sums.clone())]
    }

    /// Whether the codebook has been set from data yet (a restored run's has).
    fn initialised(&self) -> Result<bool> {
        Ok(self.counts.sum_all()?.to_scalar::<f32>()? > 0.0)
    }

    /// Before the first quantisation: every code becomes a vector of `latents` `[m, dim]` drawn at
    /// random, so that no code starts far from the data (and dead).
    pub fn initialise_from(&self, latents: &Tensor, rng: &mut StdRng) -> Result<()> {
        if self.initialised()? {
            return Ok(());
        }
        let data = rows(latents)?;
        let (size, dim) = self.codebook.dims2()?;
        let chosen: Vec<f32> = (0..size).flat_map(|_| data[rng.random_range(0..data.len())].clone()).collect();
        let book = Tensor::from_vec(chosen, (size, dim), self.codebook.device())?;
        self.codebook.set(&book)?;
        self.sums.set(&book)?;
        self.counts.set(&Tensor::ones(size, candle_core::DType::F32, self.codebook.device())?)?;
        Ok(())
    }

    /// One update from a batch's quantisation: the moving averages take in every depth's
    /// assignments, the codebook becomes their smoothed means, and codes whose count fell below
    /// the threshold restart on residuals of the batch. Returns how many restarted.
    pub fn update(&self, quantized: &Quantized, rng: &mut StdRng) -> Result<usize> {
        let (size, dim) = self.codebook.dims2()?;
        let mut batch_counts = vec![0f64; size];
        let mut batch_sums = vec![0f64; size * dim];
        let codes = quantized.codes.to_device(&Device::Cpu)?.to_vec2::<u32>()?;
        let mut pool = Vec::new();
        for (depth, residual) in quantized.residuals.iter().enumerate() {
            for (row, values) in rows(residual)?.into_iter().enumerate() {
                let k = codes[row][depth] as usize;
                batch_counts[k] += 1.0;
                for (acc, v) in batch_sums[k * dim..(k + 1) * dim].iter_mut().zip(&values) {
                    *acc += f64::from(*v);
                }
                pool.push(values);
            }
        }
        let g = self.decay;
        let mut counts: Vec<f64> = self.counts.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
        let mut sums: Vec<f64> = self.sums.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
        for k in 0..size {
            counts[k] = g * counts[k] + (1.0 - g) * batch_counts[k];
        }
        for (s, b) in sums.iter_mut().zip(&batch_sums) {
            *s = g * *s + (1.0 - g) * b;
        }
        let total: f64 = counts.iter().sum();
        let mut book = vec![0f32; size * dim];
        let mut restarted = 0;
        for k in 0..size {
            if counts[k] < self.dead_threshold && !pool.is_empty() {
                let v = &pool[rng.random_range(0..pool.len())];
                for j in 0..dim {
                    book[k * dim + j] = v[j];
                    sums[k * dim + j] = f64::from(v[j]);
                }
                counts[k] = 1.0;
                restarted += 1;
                continue;
            }
            let smoothed = (counts[k] + LAPLACE) / (total + size as f64 * LAPLACE) * total;
            for j in 0..dim {
                book[k * dim + j] = (sums[k * dim + j] / smoothed) as f32;
            }
        }
        let device = self.codebook.device();
        self.codebook.set(&Tensor::from_vec(book, (size, dim), device)?)?;
        self.counts.set(&Tensor::from_vec(counts.iter().map(|&c| c as f32).collect::<Vec<_>>(), size, device)?)?;
        self.sums.set(&Tensor::from_vec(sums.iter().map(|&s| s as f32).collect::<Vec<_>>(), (size, dim), device)?)?;
        Ok(restarted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tandem_runtime::models::rvq::ResidualQuantizer;

    #[test]
    fn codes_move_to_the_mean_of_what_they_were_given_and_dead_ones_restart() {
        let device = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[[0f32, 0.0], [10.0, 10.0], [50.0, 50.0]], &device).unwrap()).unwrap();
        let ema = CodebookEma::new(var.clone(), 0.0, 0.5).unwrap();
        let q = ResidualQuantizer::new(var.as_tensor().clone(), 1).unwrap();
        let x = Tensor::new(&[[1f32, 1.0], [3.0, 3.0], [9.0, 9.0]], &device).unwrap();
        let out = q.quantize(&x).unwrap();
        assert_eq!(out.codes.to_vec2::<u32>().unwrap(), vec![vec![0], vec![0], vec![1]]);
        let restarted = ema.update(&out, &mut StdRng::seed_from_u64(0)).unwrap();
        assert_eq!(restarted, 1, "code 2 got nothing and restarts");
        let book = var.as_tensor().to_vec2::<f32>().unwrap();
        assert!((book[0][0] - 2.0).abs() < 1e-3 && (book[1][0] - 9.0).abs() < 1e-3, "{book:?}");
        assert!([1.0f32, 3.0, 9.0].contains(&book[2][0]), "restarted on a residual of the batch: {book:?}");
    }

    #[test]
    fn initialisation_draws_codes_from_the_data_once() {
        let device = Device::Cpu;
        let var = Var::zeros((4, 2), candle_core::DType::F32, &device).unwrap();
        let ema = CodebookEma::new(var.clone(), 0.99, 0.5).unwrap();
        let data = Tensor::new(&[[5f32, 6.0], [7.0, 8.0]], &device).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        ema.initialise_from(&data, &mut rng).unwrap();
        let book = var.as_tensor().to_vec2::<f32>().unwrap();
        assert!(book.iter().all(|r| r == &vec![5.0, 6.0] || r == &vec![7.0, 8.0]), "{book:?}");
        ema.initialise_from(&Tensor::zeros((2, 2), candle_core::DType::F32, &device).unwrap(), &mut rng).unwrap();
        assert_eq!(var.as_tensor().to_vec2::<f32>().unwrap(), book, "a second call changes nothing");
    }
}
