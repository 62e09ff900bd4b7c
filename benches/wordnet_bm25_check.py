#!/usr/bin/env python3
"""Recomputes the BM25 row of the WordNet retrieval benchmark from scratch, as a cross-check.

Usage: wordnet_bm25_check.py WORDNET_DIR

WORDNET_DIR holds WordNet 3.0's data.noun, data.verb, data.adj and data.adv (the directory that
`tandem data fetch wordnet` prints). Nothing here shares code with Tandem: the data files are
parsed, the documents, queries, split, judgments, BM25 and metrics are rebuilt from the definition
in training/src/retrieval/mod.rs, and the figures are printed as JSON. They must equal those of
`tandem eval --task retrieval --model bm25 --json` up to float rounding (Tandem's BM25 sums in
float32). Under "counts" it also prints the sizes the real-WordNet test holds Tandem to: synsets
per split, queries (all, and those of the validation and test synsets), and training pairs. Standard library only; under a minute of CPU.
"""

import collections
import hashlib
import json
import math
import re
import sys

FILES = [("n", "data.noun"), ("v", "data.verb"), ("a", "data.adj"), ("r", "data.adv")]
K1, B = 1.2, 0.75


def hash64(text):
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def read(directory):
    synsets = []
    for pos, name in FILES:
        with open(f"{directory}/{name}", encoding="utf-8") as f:
            for line in f:
                if line.startswith(" ") or not line.strip():
                    continue
                head, gloss = line.split("|", 1)
                fields = head.split()
                offset, n_words = int(fields[0]), int(fields[3], 16)
                words = [fields[4 + 2 * i] for i in range(n_words)]
                if pos == "a":
                    words = [re.sub(r"\((a|p|ip)\)$", "", w) for w in words]
                k = 4 + 2 * n_words
                pointers = [fields[k + 1 + 4 * i : k + 5 + 4 * i] for i in range(int(fields[k]))]
                gloss = gloss.strip()
                quote = gloss.find('"')
                if quote < 0:
                    definition, examples = gloss, []
                else:
                    definition = gloss[:quote].rstrip(" \t;:,").strip()
                    pieces = gloss[quote:].split('"')
                    examples = [p.strip() for i, p in enumerate(pieces) if i % 2 == 1 and p.strip()]
                related = [(p[2].replace("s", "a"), int(p[1])) for p in pointers if p[0] in ("@", "@i", "~", "~i")]
                synsets.append(
                    {
                        "id": f"{offset:08}-{pos}",
                        "key": (pos, offset),
                        "lemmas": [w.replace("_", " ") for w in words],
                        "definition": definition,
                        "examples": examples,
                        "related": related,
                    }
                )
    return synsets


def tokens(text):
    return [t.lower() for t in re.split(r"[^0-9A-Za-z]+", text) if t]


def split_of(synset):
    bucket = hash64(synset["id"]) % 100
    return "test" if bucket < 2 else "val" if bucket < 4 else "train"


def counts(synsets):
    split = [split_of(s) for s in synsets]
    queries = []
    for i, s in enumerate(synsets):
        seen = set()
        for text in s["lemmas"] + s["examples"]:
            if text not in seen:
                seen.add(text)
                queries.append((i, text))

    def norm(text):
        return " ".join(text.split()).lower()

    held_out_queries = {norm(t) for i, t in queries if split[i] != "train"}
    held_out_docs = {norm(synsets[i]["definition"]) for i in range(len(synsets)) if split[i] != "train"}
    train = [(i, t) for i, t in queries if split[i] == "train"]
    pairs = [
        (i, t) for i, t in train if norm(t) not in held_out_queries and norm(synsets[i]["definition"]) not in held_out_docs
    ]
    return {
        "synsets": {k: split.count(k) for k in ("train", "val", "test")},
        "queries": len(queries),
        "held_out_queries": {k: sum(1 for i, _ in queries if split[i] == k) for k in ("val", "test")},
        "train_queries": len(train),
        "training_pairs": len(pairs),
    }


def main():
    synsets = read(sys.argv[1])
    index = {s["key"]: i for i, s in enumerate(synsets)}
    queries = []
    for i, s in enumerate(synsets):
        if split_of(s) != "test":
            continue
        seen = set()
        for text, kind in [(t, "lemma") for t in s["lemmas"]] + [(t, "example") for t in s["examples"]]:
            if text not in seen:
                seen.add(text)
                queries.append((hash64(f"{s['id']}\t{text}"), i, text, kind))
    queries = sorted(queries)[:2000]

    docs = [tokens(s["definition"]) for s in synsets]
    n_docs = len(docs)
    avgdl = sum(map(len, docs)) / n_docs
    postings = collections.defaultdict(list)
    for d, toks in enumerate(docs):
        for t, tf in collections.Counter(toks).items():
            postings[t].append((d, tf))

    def search(text):
        score = collections.defaultdict(float)
        for t in tokens(text):
            df = len(postings.get(t, ()))
            if df == 0:
                continue
            idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
            for d, tf in postings[t]:
                score[d] += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(docs[d]) / avgdl))
        return [d for d, _ in sorted(score.items(), key=lambda x: (-x[1], x[0]))[:10]]

    sums = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0.0, 0])
    for _, own, text, kind in queries:
        grades = {own: 2}
        for target in synsets[own]["related"]:
            if index[target] != own:
                grades.setdefault(index[target], 1)
        ranking = search(text)
        dcg = sum(grades.get(d, 0) / math.log2(r + 2) for r, d in enumerate(ranking))
        ideal = sorted(grades.values(), reverse=True)[:10]
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        mrr = next((1 / (r + 1) for r, d in enumerate(ranking) if d == own), 0.0)
        for key in ("all", kind):
            s = sums[key]
            s[0] += dcg / idcg
            s[1] += own in ranking[:1]
            s[2] += own in ranking
            s[3] += mrr
            s[4] += 1
    out = {"counts": counts(synsets)}
    for key, (ndcg, r1, r10, mrr, n) in sums.items():
        out[key] = {"ndcg@10": ndcg / n, "recall@1": r1 / n, "recall@10": r10 / n, "mrr@10": mrr / n, "n": n}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
