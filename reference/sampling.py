"""Official-equivalent decoding for the reference GPT (spec §5 step 11-12).

`decode` runs what the vendored `transformers_generation_utils.generate` does when infer_v2 calls
`inference_speech(..., do_sample=True, num_beams=3, top_k=30, top_p=0.8, temperature=0.8,
repetition_penalty=10.0, length_penalty=0.0, max_generate_length=1500)`, on `reference.gpt`'s
KV cache: the same transformers classes (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
TopKLogitsWarper, TopPLogitsWarper, BeamSearchScorer, which the vendored file imports from
transformers), the same order (beam path: log_softmax → processors → + beam scores → softmax over
beams × vocab → multinomial of 2·beams → sort → scorer → cache reorder; one beam: processors on the
logits, multinomial of 1) and `torch.multinomial` itself, which `draws_from` can patch so that it
consumes given Exp(1) draws: multinomial without replacement = topk(p / q, n), q ~ Exp(1).
`infer_v2_trim` is infer_v2's post-processing of the codes.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.nn import functional as F

from .common import NoTaps

DEFAULTS = dict(do_sample=True, num_beams=3, top_k=30, top_p=0.8, temperature=0.8, repetition_penalty=10.0,
                length_penalty=0.0, max_mel_tokens=1500, num_return_sequences=1, early_stopping=False)


class GivenDraws:
    """Exp(1) draws handed in (flat, all steps), consumed in order, numel(probs) per call."""

    def __init__(self, q):
        self.q = torch.as_tensor(np.asarray(q, np.float32))
        self.at = 0

    def take(self, like: torch.Tensor) -> torch.Tensor:
        n = like.numel()
        if self.at + n > self.q.numel():
            raise ValueError(f"draws ran out: need {n} more after {self.at}, {self.q.numel()} given")
        out = self.q[self.at:self.at + n].reshape(like.shape).to(like.dtype)
        self.at += n
        return out


def multinomial_from(draws: GivenDraws):
    """`torch.multinomial(p, n, replacement=False)` with q taken from `draws` (torch's own algorithm:
    q = exponential_(1) like p, then argmax (n = 1) or topk of p / q)."""
    def multinomial(probs, num_samples, replacement=False, *, generator=None, out=None):
        assert not replacement and generator is None and out is None
        r = probs / draws.take(probs)
        if num_samples == 1:
            return torch.argmax(r, dim=-1, keepdim=True)
        return torch.topk(r, num_samples).indices
    return multinomial


@contextlib.contextmanager
def draws_from(draws: GivenDraws):
    """Patch `torch.multinomial` (the name the official generate calls) to consume `draws`."""
    real = torch.multinomial
    torch.multinomial = multinomial_from(draws)
    try:
        yield draws
    finally:
        torch.multinomial = real


def processors(o: dict):
    from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
    ps = LogitsProcessorList()
    if o["repetition_penalty"] != 1.0:
        ps.append(RepetitionPenaltyLogitsProcessor(penalty=float(o["repetition_penalty"])))
    if o["do_sample"]:
        keep = 2 if o["num_beams"] > 1 else 1  # beam mode keeps len(eos) + 1
        if o["temperature"] != 1.0:
            ps.append(TemperatureLogitsWarper(o["temperature"]))
        if o["top_k"]:
            ps.append(TopKLogitsWarper(top_k=o["top_k"], min_tokens_to_keep=keep))
        if o["top_p"] < 1.0:
            ps.append(TopPLogitsWarper(top_p=o["top_p"], min_tokens_to_keep=keep))
    return ps


def _margins(total, probs, q, n, scores_sorted):
    """The reference's own ordering margins at a step (log domain): set membership of the n drawn
    (log of the n-th over the (n+1)-th ratio p / q) and the order of the drawn after the sort."""
    r = (probs / q).flatten().double()
    top = torch.topk(r, n + 1).values
    member = float(torch.log(top[n - 1] / top[n])) if top[n] > 0 else float("inf")
    s = scores_sorted.double()
    fin = s[torch.isfinite(s)]
    order = float((fin[:-1] - fin[1:]).min()) if fin.numel() > 1 else float("inf")
    return min(member, order)


class _Model:
    """The reference GPT as generate sees it: prefix + start token, then one token per row."""

    def __init__(self, model, spk_latent, emovec, text):
        self.m = model
        conds, text_emb = model._prefix(spk_latent, emovec, text, NoTaps())
        self.pre = torch.cat([conds, text_emb], 1)
        self.caches = [dict() for _ in model.gpt.h]

    def start(self, rows):
        start = torch.tensor([[self.m.cfg["start_mel_token"]]])
        x = torch.cat([self.pre, self.m._mel_emb(start, self.m._mel_positions(0, 1), NoTaps())], 1)
        return self._logits(x.expand(rows, -1, -1).contiguous())

    def step(self, tokens, step):
        pos = self.m.mel_pos_embedding.rows(torch.tensor([step + 1]), NoTaps(), "mel_pos_embedding")
        return self._logits((self.m.mel_embedding(tokens) + pos)[:, None])

    def _logits(self, x):
        h = self.m.gpt(x, None, self.caches)[:, -1:]
        return self.m.mel_head(self.m.final_norm(h))[:, -1].float()

    def reorder(self, idx):
        for c in self.caches:
            c["k"], c["v"] = c["k"].index_select(0, idx), c["v"].index_select(0, idx)


@torch.no_grad()
def decode(model, spk_latent, emovec, text, options: dict | None = None, draws: GivenDraws | None = None):
    """→ (sequences [R, W] as generate returns them after trunc_index, trace dict of per-step arrays).
    With `draws`, torch.multinomial consumes them; without, torch's default generator is used."""
    o = dict(DEFAULTS, **(options or {}))
    c = model.cfg
    g = _Model(model, spk_latent, emovec, text)
    prompt = torch.ones(1, g.pre.size(1) + 1, dtype=torch.long)
    prompt[0, -1] = c["start_mel_token"]
    eos, B, max_new = c["stop_mel_token"], o["num_beams"], o["max_mel_tokens"]
    ps = processors(o)
    tr = {k: [] for k in ("logits", "scores", "cand", "cand_scores", "beam_tokens", "beam_idx", "beam_scores",
                          "hyps", "hyp_worst", "margin")}
    ctx = draws_from(draws) if draws is not None else contextlib.nullcontext()
    with ctx:
        if B == 1:
            ids = prompt
            logits = g.start(1)
            for step in range(max_new):
                sc = ps(ids, logits)
                if o["do_sample"]:
                    probs = F.softmax(sc, dim=-1)
                    if draws is not None:
                        q = draws.q[draws.at:draws.at + probs.numel()].reshape(probs.shape)
                        r = (probs / q).flatten().double()
                        t2 = torch.topk(r, 2).values
                        tr["margin"].append(float(torch.log(t2[0] / t2[1])) if t2[1] > 0 else float("inf"))
                    tok = torch.multinomial(probs, num_samples=1).squeeze(1)
                else:
                    tok = torch.argmax(sc, dim=-1)
                    t2 = torch.topk(sc[0].double(), 2).values
                    tr["margin"].append(float(t2[0] - t2[1]))
                for k, v in (("logits", logits), ("scores", sc), ("cand", tok[:, None]), ("cand_scores", sc[:, tok]),
                             ("beam_tokens", tok[None]), ("beam_idx", torch.zeros(1, 1, dtype=torch.long)),
                             ("beam_scores", torch.zeros(1, 1)), ("hyps", torch.zeros(1, dtype=torch.long)),
                             ("hyp_worst", torch.zeros(1))):
                    tr[k].append(v.reshape(-1))
                ids = torch.cat([ids, tok[:, None]], -1)
                if int(tok) == eos or step + 1 == max_new:
                    break
                logits = g.step(tok, step + 1)
            return ids[:, prompt.size(1):], {k: _stack(v) for k, v in tr.items()}

        from transformers.generation.beam_search import BeamSearchScorer
        scorer = BeamSearchScorer(batch_size=1, num_beams=B, device=torch.device("cpu"), length_penalty=o["length_penalty"],
                                  do_early_stopping=o["early_stopping"], num_beam_hyps_to_keep=o["num_return_sequences"],
                                  max_length=prompt.size(1) + max_new)
        ids = prompt.expand(B, -1).contiguous()
        beam_scores = torch.zeros(1, B)
        beam_scores[:, 1:] = -1e9
        beam_scores = beam_scores.view(-1)
        logits = g.start(B)
        V = logits.size(-1)
        eos_t, pad_t = torch.tensor([eos]), torch.tensor(eos)  # generate's special-token tensors: eos 1-d, pad 0-d
        for step in range(max_new):
            sc = ps(ids, F.log_softmax(logits, dim=-1))
            total = (sc + beam_scores[:, None]).view(1, B * V)
            n = 2 * B
            if o["do_sample"]:
                probs = F.softmax(total, dim=-1)
                q = draws.q[draws.at:draws.at + probs.numel()].reshape(probs.shape) if draws is not None else None
                nt = torch.multinomial(probs, num_samples=n)
                ns = torch.gather(total, -1, nt)
                ns, order = torch.sort(ns, descending=True, dim=1)
                nt = torch.gather(nt, -1, order)
                if q is not None:
                    tr["margin"].append(_margins(total, probs, q, n, ns[0]))
            else:
                ns, nt = torch.topk(total, n, dim=1, largest=True, sorted=True)
                tr["margin"].append(float((ns[0, :-1] - ns[0, 1:]).min()))
            out = scorer.process(ids, ns, nt % V, torch.div(nt, V, rounding_mode="floor"), pad_token_id=pad_t,
                                 eos_token_id=eos_t, decoder_prompt_len=prompt.size(1))
            beam_scores, toks, idx = out["next_beam_scores"], out["next_beam_tokens"], out["next_beam_indices"]
            hyp = scorer._beam_hyps[0]
            for k, v in (("logits", logits), ("scores", sc), ("cand", nt), ("cand_scores", ns), ("beam_tokens", toks),
                         ("beam_idx", idx), ("beam_scores", beam_scores), ("hyps", torch.tensor([len(hyp)])),
                         ("hyp_worst", torch.tensor([hyp.worst_score], dtype=torch.float32))):
                tr[k].append(v.reshape(-1).clone())
            ids = torch.cat([ids[idx, :], toks[:, None]], dim=-1)
            g.reorder(idx)
            if scorer.is_done or ids.size(1) >= prompt.size(1) + max_new:
                break
            logits = g.step(toks, step + 1)
        seq = scorer.finalize(ids, beam_scores, toks, idx, pad_token_id=pad_t, eos_token_id=eos_t,
                              max_length=prompt.size(1) + max_new, decoder_prompt_len=prompt.size(1))["sequences"]
        return seq[:, prompt.size(1):], {k: _stack(v) for k, v in tr.items()}


def _stack(v):
    if not v:
        return np.zeros(0)
    if isinstance(v[0], float):
        return np.array(v)
    return torch.stack(v).numpy()


def infer_v2_trim(codes: torch.Tensor, stop: int):
    """infer_v2's loop over `codes` rows: cut at the first stop token; a row without one appends its
    length twice (the official code's quirk); every row is cut to the last row's length."""
    code_lens = []
    code_len = codes.shape[-1]
    for code in codes:
        if stop not in code:
            code_lens.append(len(code))
            code_len = len(code)
        else:
            code_len = int((code == stop).nonzero(as_tuple=False)[0]) + 1 - 1
        code_lens.append(code_len)
    return codes[:, :code_len], torch.LongTensor(code_lens)
