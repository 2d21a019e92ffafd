//! The decode loop of the vendored `generate`: `_beam_search` (with `do_sample`) driving a
//! `BeamSearchScorer` / `BeamHypotheses`, and `_sample` for one beam, over any [`Decoder`].
use super::processors as p;
use super::rng::{multinomial, Draws};
use super::{DecodeConfig, DecodeFaults, EarlyStopping};
use crate::error::{input_err, Result};

/// What the loop needs from a language model with a KV cache (rows = beams).
pub trait Decoder {
    fn vocab(&self) -> usize;
    /// Logits `[rows][V]` after the prefix and the start token, every row the same sequence.
    fn start(&mut self, rows: usize) -> Result<Vec<Vec<f32>>>;
    /// Feeds one token per row at decode step `step` (≥ 1) → logits `[rows][V]`.
    fn step(&mut self, tokens: &[i64], step: usize) -> Result<Vec<Vec<f32>>>;
    /// New cache row r = old row `idx[r]`.
    fn reorder(&mut self, idx: &[usize]) -> Result<()>;
}

/// Per-step record, flat row-major: S steps × rows (B) × V / × candidates (C).
#[derive(Default, Debug)]
pub struct Trace {
    pub steps: usize,
    pub rows: usize,
    pub cands: usize,
    pub logits: Vec<f32>,
    pub scores: Vec<f32>,
    pub cand: Vec<i64>,
    pub cand_scores: Vec<f32>,
    pub beam_tokens: Vec<i64>,
    pub beam_idx: Vec<i64>,
    pub beam_scores: Vec<f32>,
    pub hyps: Vec<i64>,
    pub hyp_worst: Vec<f32>,
}

pub struct Generated {
    /// As `generate` returns them after `[:, trunc_index:]`: stop token kept, pad-filled rows.
    pub sequences: Vec<Vec<i64>>,
    pub trace: Trace,
}

/// `BeamHypotheses` (one batch entry): the n best finished hypotheses.
struct Hyps {
    n: usize,
    lp: f64,
    early: EarlyStopping,
    max_new: usize,
    beams: Vec<(f64, Vec<i64>)>,
    worst: f64,
}

impl Hyps {
    fn add(&mut self, hyp: Vec<i64>, sum_logprobs: f64, generated_len: usize) {
        let score = sum_logprobs / (generated_len as f64).powf(self.lp);
        if self.beams.len() < self.n || score > self.worst {
            self.beams.push((score, hyp));
            if self.beams.len() > self.n {
                let mut s: Vec<(f64, usize)> = self.beams.iter().enumerate().map(|(i, b)| (b.0, i)).collect();
                s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                self.beams.remove(s[0].1);
                self.worst = s[1].0;
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    fn is_done(&self, best_sum_logprobs: f64, generated: usize) -> bool {
        if self.beams.len() < self.n {
            return false;
        }
        match self.early {
            EarlyStopping::Bool(true) => true,
            EarlyStopping::Never(_) if self.lp > 0.0 => self.worst >= best_sum_logprobs / (self.max_new as f64).powf(self.lp),
            _ => self.worst >= best_sum_logprobs / (generated as f64).powf(self.lp),
        }
    }
}

fn argmax(x: &[f32]) -> usize {
    p::top_n_desc(x, 1)[0]
}

/// Runs the official loop. `prompt` = the input ids `generate` sees (infer_v2: placeholder ones
/// and the start token), which the repetition penalty covers; `forced[s]` replaces step s's
/// candidates (flat beam·V + token indices, in ranked order) while its draws are still consumed.
#[allow(clippy::too_many_arguments)]
pub fn generate(dec: &mut dyn Decoder, prompt: &[i64], cfg: &DecodeConfig, eos: i64, draws: &mut Draws, faults: DecodeFaults, forced: &[Vec<i64>], record: bool) -> Result<Generated> {
    cfg.validate()?;
    let v = dec.vocab();
    let b = cfg.num_beams;
    let sample = cfg.do_sample;
    let pen = cfg.repetition_penalty != 1.0;
    let min_keep = if b > 1 { 2 } else { 1 }; // eos count + 1 in beam mode
    let mut tr = Trace { rows: b, cands: if b > 1 { 2 * b } else { 1 }, ..Default::default() };
    let warp = |row: &mut Vec<f32>| {
        if sample {
            if cfg.temperature != 1.0 {
                p::temperature(row, cfg.temperature);
            }
            if cfg.top_k != 0 {
                p::top_k(row, cfg.top_k, min_keep);
            }
            if cfg.top_p < 1.0 {
                p::top_p(row, cfg.top_p, min_keep, faults.top_p_one_too_few);
            }
        }
    };
    let mut gen: Vec<Vec<i64>> = vec![Vec::new(); b];
    let mut logits = dec.start(b)?;
    let ids = |g: &Vec<i64>| -> Vec<i64> { prompt.iter().chain(g.iter()).copied().collect() };
    let check_forced = |s: usize| -> Result<Option<Vec<usize>>> {
        let Some(f) = forced.get(s) else { return Ok(None) };
        if f.len() != tr_cands(b) || f.iter().any(|&c| c < 0 || c as usize >= b * v) {
            return input_err(format!("`forced` step {s} must hold {} indices in [0, {})", tr_cands(b), b * v));
        }
        Ok(Some(f.iter().map(|&c| c as usize).collect()))
    };

    if b == 1 {
        // `_sample`: processors on the raw logits, argmax(p / q) (or argmax of the scores).
        for step in 0..cfg.max_mel_tokens {
            let mut row = logits[0].clone();
            if pen {
                p::repetition_penalty(&mut row, &ids(&gen[0]), cfg.repetition_penalty);
            }
            warp(&mut row);
            let own = if sample {
                let q = draws.take(v)?;
                multinomial(&p::softmax(&row), &q, 1)[0]
            } else {
                argmax(&row)
            };
            let tok = check_forced(step)?.map_or(own, |f| f[0]) as i64;
            if record {
                tr.logits.extend(&logits[0]);
                tr.scores.extend(&row);
                tr.cand.push(tok);
                tr.cand_scores.push(row[tok as usize]);
                tr.beam_tokens.push(tok);
                tr.beam_idx.push(0);
                tr.beam_scores.push(0.0);
                tr.hyps.push(0);
                tr.hyp_worst.push(0.0);
            }
            tr.steps = step + 1;
            gen[0].push(tok);
            if tok == eos || step + 1 == cfg.max_mel_tokens {
                break;
            }
            logits = dec.step(&[tok], step + 1)?;
        }
        return Ok(Generated { sequences: vec![gen.swap_remove(0)], trace: tr });
    }

    let lp = if faults.length_penalty_one { 1.0 } else { cfg.length_penalty };
    let mut hyps = Hyps { n: b, lp, early: cfg.early_stopping, max_new: cfg.max_mel_tokens, beams: Vec::new(), worst: 1e9 };
    // Beam 0 starts at 0, the others at −1e9, so step 0 draws from beam 0 only.
    let mut beam_scores: Vec<f32> = (0..b).map(|i| if i == 0 { 0.0 } else { -1e9 }).collect();
    let mut done = false;
    for step in 0..cfg.max_mel_tokens {
        let mut total = Vec::with_capacity(b * v);
        for r in 0..b {
            let mut row = logits[r].clone();
            let rid = ids(&gen[r]);
            if pen && faults.penalty_on_logits {
                p::repetition_penalty(&mut row, &rid, cfg.repetition_penalty);
            }
            p::log_softmax(&mut row);
            if pen && !faults.penalty_on_logits {
                p::repetition_penalty(&mut row, &rid, cfg.repetition_penalty);
            }
            warp(&mut row);
            if record {
                tr.logits.extend(&logits[r]);
                tr.scores.extend(&row);
            }
            let add = if faults.beam_scores_not_added { 0.0 } else { beam_scores[r] };
            total.extend(row.iter().map(|&x| x + add));
        }
        let n = 2 * b;
        let mut cand = if sample {
            let q = draws.take(b * v)?;
            multinomial(&p::softmax(&total), &q, n)
        } else {
            super::stl::topk(&total, n)
        };
        match check_forced(step)? {
            Some(f) => cand = f,
            // `torch.sort(descending=True)` of the drawn candidates' scores (stable on CPU).
            None if sample => cand.sort_by(|&a, &c| total[c].partial_cmp(&total[a]).unwrap_or(std::cmp::Ordering::Equal)),
            None => {}
        }
        let cs: Vec<f32> = cand.iter().map(|&c| total[c]).collect();
        // BeamSearchScorer.process
        let mut next: Vec<(f32, i64, usize)> = Vec::with_capacity(b);
        for (rank, (&c, &s)) in cand.iter().zip(&cs).enumerate() {
            let (beam, tok) = (c / v, (c % v) as i64);
            if tok == eos {
                if rank >= b {
                    continue;
                }
                if !faults.eos_beam_not_finalised {
                    hyps.add(gen[beam].clone(), s as f64, step + 1);
                }
            } else {
                next.push((s, tok, beam));
            }
            if next.len() == b {
                break;
            }
        }
        if next.len() < b {
            return input_err(format!("step {step}: fewer than {b} non-stop candidates among {cand:?}"));
        }
        let best = cs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        done = done || hyps.is_done(best, step + 1);
        let idx: Vec<usize> = next.iter().map(|x| x.2).collect();
        let toks: Vec<i64> = next.iter().map(|x| x.1).collect();
        beam_scores = next.iter().map(|x| x.0).collect();
        gen = next.iter().map(|&(_, t, i)| gen[i].iter().copied().chain(std::iter::once(t)).collect()).collect();
        if record {
            tr.cand.extend(cand.iter().map(|&c| c as i64));
            tr.cand_scores.extend(&cs);
            tr.beam_tokens.extend(&toks);
            tr.beam_idx.extend(idx.iter().map(|&i| i as i64));
            tr.beam_scores.extend(&beam_scores);
            tr.hyps.push(hyps.beams.len() as i64);
            tr.hyp_worst.push(hyps.worst as f32);
        }
        tr.steps = step + 1;
        if !faults.kv_cache_not_reordered {
            dec.reorder(&idx)?;
        }
        if done || step + 1 == cfg.max_mel_tokens {
            break;
        }
        logits = dec.step(&toks, step + 1)?;
    }
    // BeamSearchScorer.finalize
    if !done {
        for r in 0..b {
            let len = gen[r].len();
            hyps.add(gen[r].clone(), beam_scores[r] as f64, len);
        }
    }
    let mut sorted = hyps.beams;
    sorted.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal)); // stable, by score
    let best: Vec<Vec<i64>> = (0..cfg.num_return_sequences).filter_map(|_| sorted.pop().map(|h| h.1)).collect();
    let longest = best.iter().map(|h| h.len()).max().unwrap_or(0);
    let width = (longest + 1).min(cfg.max_mel_tokens);
    let sequences = best
        .iter()
        .map(|h| {
            let mut r = h.clone();
            if r.len() < width {
                r.push(eos); // first stop token, then pad (= stop) up to the width
            }
            r.resize(width, eos);
            r
        })
        .collect();
    Ok(Generated { sequences, trace: tr })
}

fn tr_cands(b: usize) -> usize {
    if b > 1 {
        2 * b
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::rng::Draws;

    /// A fixed bigram table as a "model": logits depend on the last token only.
    struct Bigram {
        v: usize,
        last: Vec<i64>,
    }
    impl Bigram {
        fn row(&self, t: i64) -> Vec<f32> {
            (0..self.v).map(|j| (((t as usize * 7 + j * 13) % 11) as f32) * 0.4 - (j == self.v - 1) as u8 as f32 * 1.5).collect()
        }
    }
    impl Decoder for Bigram {
        fn vocab(&self) -> usize {
            self.v
        }
        fn start(&mut self, rows: usize) -> Result<Vec<Vec<f32>>> {
            self.last = vec![0; rows];
            Ok(vec![self.row(0); rows])
        }
        fn step(&mut self, tokens: &[i64], _: usize) -> Result<Vec<Vec<f32>>> {
            self.last = tokens.to_vec();
            Ok(tokens.iter().map(|&t| self.row(t)).collect())
        }
        fn reorder(&mut self, _: &[usize]) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn beam_sampling_runs_and_is_reproducible() {
        let cfg = DecodeConfig { max_mel_tokens: 12, ..Default::default() };
        let run = |seed| {
            let mut d = Bigram { v: 9, last: vec![] };
            generate(&mut d, &[1, 1, 0], &cfg, 8, &mut Draws::seeded(seed), DecodeFaults::default(), &[], true).unwrap()
        };
        let (a, b) = (run(3), run(3));
        assert_eq!(a.sequences, b.sequences);
        assert!(a.trace.steps >= 1 && a.sequences[0].len() <= 12);
    }
}
