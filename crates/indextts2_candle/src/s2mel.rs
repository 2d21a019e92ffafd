//! s2mel entry points for the registry. Two kinds share `s2mel.pth` (converted keys
//! `net.{cfm,length_regulator,gpt_layer}.…`):
//! - `dit` (prefix `net.cfm`): `estimator` (one DiT call) and `cfm` (the Euler/CFG solve);
//! - `length_regulator` (prefix `net`): `forward` (InterpolateRegulator) and `latent_proj` (gpt_layer).
use crate::ctx::Ctx;
use crate::dit::Dit;
use crate::error::{input_err, Result};
use crate::length_regulator::Regulator;
use crate::registry::{take, Named, Runnable};
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;

/// An int64 vector input (lengths).
fn lengths(t: &Tensor, name: &str) -> Result<Vec<i64>> {
    if t.dtype() != DType::I64 || t.rank() != 1 {
        return input_err(format!("`{name}` must be a 1-D int64 tensor, got {:?} {:?}", t.dtype(), t.dims()));
    }
    Ok(t.to_vec1::<i64>()?)
}

fn floats(t: &Tensor, name: &str) -> Result<Tensor> {
    if !t.dtype().is_float() {
        return input_err(format!("`{name}` must be float32, got {:?}", t.dtype()));
    }
    Ok(t.clone())
}

impl Runnable for Dit {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "estimator" => {
                let i = take(inputs, method, &["x", "prompt_x", "x_lens", "t", "style", "cond"])?;
                let lens = lengths(i[2], "x_lens")?;
                let v = self.forward(&floats(i[0], "x")?, &floats(i[1], "prompt_x")?, &lens, &floats(i[3], "t")?, &floats(i[4], "style")?, &floats(i[5], "cond")?, ctx)?;
                Ok(vec![("velocity".into(), v)])
            }
            "cfm" => {
                let i = take(inputs, method, &["z", "x_lens", "prompt", "mu", "style", "t_span"])?;
                let lens = lengths(i[1], "x_lens")?;
                let ts = floats(i[5], "t_span")?;
                if ts.rank() != 1 {
                    return input_err(format!("t_span must be 1-D, got {:?}", ts.dims()));
                }
                let ts = ts.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                let states = self.solve_euler(&floats(i[0], "z")?, &lens, &floats(i[2], "prompt")?, &floats(i[3], "mu")?, &floats(i[4], "style")?, &ts, ctx)?;
                let mut out: Named = Vec::with_capacity(states.len() + 1);
                if let Some(last) = states.last() {
                    out.push(("mel".into(), last.clone()));
                }
                out.extend(states.into_iter().enumerate().map(|(k, s)| (format!("x_step_{k}"), s)));
                Ok(out)
            }
            _ => input_err(format!("dit has no method `{method}` (methods: [\"estimator\", \"cfm\"])")),
        }
    }
}

impl Runnable for Regulator {
    fn run(&self, method: &str, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> Result<Named> {
        match method {
            "forward" => {
                let i = take(inputs, method, &["x", "ylens"])?;
                let ylens = lengths(i[1], "ylens")?;
                Ok(vec![("out".into(), self.forward(&floats(i[0], "x")?, &ylens, ctx)?)])
            }
            "latent_proj" => {
                let i = take(inputs, method, &["latent"])?;
                Ok(vec![("out".into(), self.latent_proj(&floats(i[0], "latent")?, ctx)?)])
            }
            _ => input_err(format!("length_regulator has no method `{method}` (methods: [\"forward\", \"latent_proj\"])")),
        }
    }
}
