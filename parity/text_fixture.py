"""Small synthetic `bpe.model`s in the official format (SentencePiece), trained deterministically.

Variants: `nfkc` (BPE, the default), `fallback` (BPE + byte fallback + user-defined pieces +
nfkc_cf) and `unigram` — the official IndexTTS2 `bpe.model` is, despite its name, a UNIGRAM model
whose 12000 pieces are mostly user-defined CJK characters and pinyin, and `unigram` mimics that.

The corpus is embedded below (English, Chinese, punctuation, digits, full-width forms). Lines go
through the official pre-tokenizer (`tokenize_by_cjk_char`: CJK characters spaced out, uppercase)
before training, as the official vocabulary was built: lowercase letters therefore stay unknown.
`character_coverage` < 1 also leaves the rarest characters out, so the unknown path is exercised,
and the default `nmt_nfkc` rule embeds a precompiled char map, so the normalizer's trie is too.

Models are cached under `.fixture_cache/text/<variant>-<hash of corpus + trainer args>.model`,
written to a temporary file and renamed into place, so concurrent xdist workers are safe.
Training with `num_threads=1` is deterministic (tests/test_text.py checks it: two trainings, same bytes).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

from reference.text import tokenize_by_cjk_char

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".fixture_cache", "text")

ENGLISH = """\
The quick brown fox jumps over the lazy dog.
She sells sea shells by the sea shore, doesn't she?
I will see you at eight o'clock tomorrow morning.
Please read the next sentence slowly and clearly.
How are you today? I am fine, thank you!
The weather is nice, so let's go for a walk in the park.
Speech synthesis turns written text into natural sounding voice.
A good model should speak with rhythm, stress and emotion.
Numbers like 1, 2, 3 and 2025 must be read out as words first.
The train leaves at 9:30 from platform 4.
He said: "This is the best day of my life!"
Well... I don't know what to say.
Can you hear me now? Yes, I can hear you.
Open the window - it is too warm in here.
We need bread, milk, eggs, butter and cheese.
Is it raining outside? No, it is sunny.
Every morning she drinks a cup of green tea.
The children are playing football in the garden.
My phone number is 555-0199, call me later.
Learning a new language takes time and patience.
The meeting was moved to Friday afternoon.
What a beautiful song! Play it again, please.
Turn left at the corner, then walk two blocks.
The museum opens at ten and closes at six.
They travelled across the mountains by bus and by train.
Reading books before sleep helps me relax.
Our team won the match by three goals to one.
The cat sat quietly on the warm window sill.
Don't forget to bring your umbrella today.
It's never too late to learn something new.
The river flows slowly through the old town.
Good night, and sweet dreams!
Thank you for listening to this short story.
The voice sounds calm, friendly and clear.
Where is the nearest station? It is over there.
Our flight was delayed by two hours.
The doctor said I should rest for a few days.
Music can change the way we feel.
This is a test of the text front end.
Hello world, hello again, and goodbye.
"""

CHINESE = """\
今天天气很好，我们去公园散步吧。
你好，很高兴认识你！
我爱你，这句话的英语是什么？
语音合成技术把文字变成自然的声音。
他说：“这是我一生中最好的一天。”
明天早上八点，我们在学校门口见面。
请慢慢地、清楚地读下一句话。
这家饭店的菜很好吃，价格也不贵。
我每天早上都喝一杯绿茶。
孩子们在花园里踢足球。
外面下雨了吗？没有，今天是晴天。
学习一门新的语言需要时间和耐心。
会议改到了星期五下午。
这首歌真好听！请再放一遍。
在路口向左转，然后走两条街。
博物馆上午十点开门，下午六点关门。
他们坐汽车和火车穿过了大山。
睡觉前读书可以帮助我放松。
我们队以三比一赢得了比赛。
猫安静地坐在温暖的窗台上。
别忘了今天带雨伞。
学习新东西永远不会太晚。
河水慢慢地流过古老的小镇。
晚安，祝你做个好梦！
谢谢你听完这个小故事。
这个声音听起来平静、友好而且清楚。
最近的车站在哪里？就在那边。
我们的航班晚点了两个小时。
医生说我应该休息几天。
音乐可以改变我们的心情。
这是文本前端的一个测试。
春天来了，花儿都开了。
中国有很多美丽的城市和古老的文化。
妈妈在厨房里做饭，爸爸在看报纸。
我们一起去看电影好不好？
这本书的故事非常有意思。
北京是中国的首都。
请问现在几点了？现在是下午三点。
火车站离这里不远，走路十分钟就到了。
他的声音很好听，像唱歌一样。
"""

# Mixed lines, full-width forms (NFKC maps them), digits, odd spacing and rare characters.
MIXED = """\
IndexTTS 正式发布 1.0 版本了，效果很好。
我们用 Python 和 Rust 写代码。
这个 model 的 voice 很自然。
Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３ 也要能读。
请在 2025 年 1 月 11 日之前完成。
The price is 12.5 dollars, 很便宜！
Hello 你好，Goodbye 再见。
OK，没问题。
Wait... 真的吗？
A-B-C, 一二三。
"""

SEED_LINES = ENGLISH.splitlines() + CHINESE.splitlines() + MIXED.splitlines()


def corpus_lines() -> list[str]:
    """A few hundred deterministic training lines built from the seed sentences."""
    lines = list(SEED_LINES)
    en, zh = ENGLISH.splitlines(), CHINESE.splitlines()
    for i in range(len(zh)):
        lines.append(f"{zh[i]} {en[(3 * i) % len(en)]}")
        lines.append(f"{en[i % len(en)]} {zh[(7 * i + 1) % len(zh)]}")
    for i in range(0, len(en), 2):
        lines.append(f"{en[i]} {en[i + 1]}")
        lines.append(f"{zh[i]}{zh[i + 1]}")
    lines.append("罕见字：龘靐齉。")  # seen once: left out by character_coverage
    return [tokenize_by_cjk_char(s) for s in lines if s.strip()]


# Every CJK character of the corpus and a few tone-numbered pinyin syllables: user-defined pieces,
# as in the official file.
USER_CJK = sorted({c for line in CHINESE.splitlines() for c in line if "\u4e00" <= c <= "\u9fff"})
USER_PINYIN = ["NI3", "HAO3", "ZHONG1", "WEN2", "XUAN4", "GAN3", "SHANG5"]

VARIANTS = {
    # the brief's settings: BPE, nmt_nfkc char map, <s>=0 </s>=1 <unk>=2, no pad
    "nfkc": dict(model_type="bpe", vocab_size=400, character_coverage=0.995, bos_id=0, eos_id=1, unk_id=2, pad_id=-1,
                 normalization_rule_name="nmt_nfkc"),
    # extra paths: byte fallback, user-defined pieces, case-folding char map
    "fallback": dict(model_type="bpe", vocab_size=700, character_coverage=0.995, bos_id=0, eos_id=1, unk_id=2, pad_id=-1,
                     normalization_rule_name="nfkc_cf", byte_fallback=True, user_defined_symbols=["<tag>", "hello", "▁你好"]),
    # the official bpe.model's actual shape: model_type UNIGRAM, nmt_nfkc, CJK + pinyin user-defined
    "unigram": dict(model_type="unigram", vocab_size=700, character_coverage=0.995, bos_id=0, eos_id=1, unk_id=2,
                    pad_id=-1, normalization_rule_name="nmt_nfkc", user_defined_symbols=USER_CJK + USER_PINYIN),
}
COMMON = dict(num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, hard_vocab_limit=False,
              minloglevel=2, max_sentencepiece_length=16, seed_sentencepiece_size=1000000)


def train(path: str, variant: str = "nfkc") -> None:
    """Trains the variant into `path` (no caching). Lines are fed from memory and the model is
    written from memory, so no file name ends up in the stored trainer_spec."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus_lines()), model_writer=buf,
                                   **dict(COMMON, **VARIANTS[variant]))
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def cache_key(variant: str) -> str:
    import sentencepiece as spm

    blob = json.dumps([corpus_lines(), COMMON, VARIANTS[variant], spm.__version__], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def synthetic_bpe_model(path: str | None = None, variant: str = "nfkc") -> str:
    """Path of the cached synthetic model (trained on first use); copied to `path` when given."""
    os.makedirs(CACHE, exist_ok=True)
    cached = os.path.join(CACHE, f"{variant}-{cache_key(variant)}.model")
    if not os.path.exists(cached):
        fd, tmp = tempfile.mkstemp(dir=CACHE, suffix=".tmp")
        os.close(fd)
        try:
            train(tmp, variant)
            os.replace(tmp, cached)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if path is None:
        return cached
    with open(cached, "rb") as f:
        data = f.read()
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path
