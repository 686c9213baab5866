"""Writes tests/assets/tokenizer_versions/VERSION/*.json: `to_str()` of the same tokenizers under one `tokenizers`.

Run it in a scratch virtual environment holding only that version (`pip install tokenizers==VERSION`):
`python dump.py token_spaces/tiny/tokenizer.json tests/assets/tokenizer_versions/VERSION`. Versions before 0.16
spell Metaspace's options with `add_prefix_space`; the same tokenizer is built either way.
"""
import sys, json
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, normalizers, processors, AddedToken, Regex
out = sys.argv[2]
d = json.load(open(sys.argv[1]))
d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]  # both old and new versions read strings
toks = {"tiny": Tokenizer.from_str(json.dumps(d))}
t = Tokenizer(models.Unigram([("<unk>", 0.0), ("▁a", -1.5), ("b", -2.25), ("▁", -3.0), ("a", -4.0)], 0, byte_fallback=False))
t.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" ", "▁")])
try:
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    t.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
except TypeError:  # tokenizers < 0.16
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", add_prefix_space=True, prepend_scheme="first")
    t.decoder = decoders.Metaspace(replacement="▁", add_prefix_space=True)
t.add_special_tokens([AddedToken("<s>", special=True)])
toks["unigram_metaspace"] = t
t = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2, "<unk>": 3}, merges=[("a", "b")], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\d"), "isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
t.post_processor = processors.TemplateProcessing(single="<unk> $A", special_tokens=[("<unk>", 3)])
t.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
t.add_tokens([AddedToken("<think>", special=False, lstrip=True)])
toks["bpe_options"] = t
t = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
t.normalizer = normalizers.BertNormalizer()
t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
t.decoder = decoders.WordPiece()
t.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 4))
toks["wordpiece"] = t
for name, t in toks.items():
    open(f"{out}/{name}.json", "w").write(t.to_str())
