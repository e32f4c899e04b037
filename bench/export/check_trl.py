"""Check exported DPO files the way TRL reads them.

Usage: python bench/export/check_trl.py MODEL_DIR FILE...   (FILE: .jsonl or .parquet)

For each file: it loads with `datasets` (as `load_dataset("json"|"parquet", ...)` does for a
TRL user), every row has TRL's preference columns, one form holds throughout (TRL's own
`is_conversational`), and TRL's `maybe_apply_chat_template` turns each row into the strings
the DPO trainer tokenizes, with the judge folder's tokenizer and chat template.

Needs: pip install pyarrow datasets transformers packaging jinja2 psutil && pip install --no-deps trl
(no torch: TRL's data utilities run without it).
"""
import sys

from datasets import load_dataset
from transformers import AutoTokenizer
from trl.data_utils import is_conversational, maybe_apply_chat_template


def check(path, tokenizer):
    kind = "parquet" if path.endswith(".parquet") else "json"
    ds = load_dataset(kind, data_files=path, split="train")
    missing = {"prompt", "chosen", "rejected"} - set(ds.column_names)
    assert not missing, f"{path}: missing columns {missing}"
    forms = {is_conversational(row) for row in ds}
    assert len(forms) <= 1, f"{path}: rows in both TRL forms"
    for row in ds:
        out = maybe_apply_chat_template(row, tokenizer)
        for col in ("prompt", "chosen", "rejected"):
            assert isinstance(out[col], str) and out[col], f"{path}: {col} did not become text: {row}"
    form = "empty" if not forms else ("conversational" if forms.pop() else "standard")
    print(f"ok  {path}: {len(ds)} rows, {form} form, columns {ds.column_names}")


if __name__ == "__main__":
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    for f in sys.argv[2:]:
        check(f, tok)
