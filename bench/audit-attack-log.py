#!/usr/bin/env python3
"""Audits an `eval attack` JSONL log against WordNet 3.0's own files, independently of prune-dist's parser.

    bench/audit-attack-log.py LOG.jsonl [--wordnet /usr/share/wordnet]

For every example the log calls a success: the model was right on the original (original_prediction == gold)
and wrong on the adversarial text (adversarial_prediction != gold), and the adversarial text is the original
with exactly the logged words replaced. For every substitution: the two words are WordNet synonyms of the same
part of speech in the same form, i.e. some analysis of each (a lemma of POS p itself, or an inflection of a
lemma of POS p by the same ending, regular or listed in p's exception file) has lemmas that share a synset of
POS p. Prints the counts and every violation; exits 1 if there is one.
"""
import json, os, re, sys

POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# morphy's detachment rules (WordNet's morph.c), and the ending each one removes, as an inflection class
RULES = {"n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")],
         "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
         "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")], "r": []}
ENDINGS = ["ing", "est", "ed", "er", "s"]  # a listed irregular form's class: the inflection ending it carries
WORD = re.compile(r"[\w'-]+")  # a word as the attack segments it


def ending_class(suffix):
    return "s" if suffix.endswith("s") else suffix


def load(wordnet):
    index, exc, data = {}, {}, {}
    for p, name in POS.items():
        index[p] = {}
        for line in open(os.path.join(wordnet, f"index.{name}"), encoding="latin-1"):
            if line.startswith(" "):
                continue
            f = line.split()
            n, ptrs = int(f[2]), int(f[3])
            index[p][f[0]] = [int(o) for o in f[4 + ptrs + 2: 4 + ptrs + 2 + n]]
        exc[p] = {}
        path = os.path.join(wordnet, f"{name}.exc")
        if os.path.exists(path):
            for line in open(path, encoding="latin-1"):
                f = line.split()
                exc[p].setdefault(f[0], []).extend(f[1:])
        data[p] = open(os.path.join(wordnet, f"data.{name}"), "rb").read()
    return index, exc, data


def synset_lemmas(data, p, offset):
    end = data[p].index(b"\n", offset)
    f = data[p][offset:end].decode("latin-1").split()
    count = int(f[3], 16)
    return {f[4 + 2 * i].split("(")[0].lower() for i in range(count)}


def analyses(word, index, exc):
    """(pos, lemma, form) for every way WordNet can read `word`: form "lemma", or an inflection ending."""
    out = set()
    for p in POS:
        if word in index[p]:
            out.add((p, word, "lemma"))
        if word in exc[p]:
            cls = next((e for e in ENDINGS if word.endswith(e)), "irregular")
            out.update((p, base, cls) for base in exc[p][word] if base in index[p])
        else:
            for suffix, repl in RULES[p]:
                if word.endswith(suffix) and len(word) > len(suffix):
                    base = word[: -len(suffix)] + repl
                    if base in index[p]:
                        out.add((p, base, ending_class(suffix)))
    return out


def same_pos_synonyms(original, replacement, index, exc, data):
    for p, base, form in analyses(original, index, exc):
        for q, other, other_form in analyses(replacement, index, exc):
            if q == p and other_form == form and other != base:
                if any(other in synset_lemmas(data, p, o) for o in index[p][base]):
                    return (p, base, other, form)
    return None


def main():
    args = sys.argv[1:]
    wordnet = "/usr/share/wordnet"
    if "--wordnet" in args:
        i = args.index("--wordnet"); wordnet = args[i + 1]; del args[i:i + 2]
    index, exc, data = load(wordnet)
    examples = successes = substitutions = 0
    violations = []
    for line in open(args[0]):
        r = json.loads(line)
        examples += 1
        if r["status"] != "succeeded":
            continue
        successes += 1
        where = f"example {r['index']}"
        if r["original_prediction"] != r["gold"] or r["adversarial_prediction"] == r["gold"]:
            violations.append(f"{where}: not a flip (gold {r['gold']}, original {r['original_prediction']}, adversarial {r['adversarial_prediction']})")
        text = r["original"]
        for s in sorted(r["substitutions"], key=lambda s: -s["index"]):
            substitutions += 1
            found = same_pos_synonyms(s["original"].lower(), s["replacement"].lower(), index, exc, data)
            if found is None:
                violations.append(f"{where}: {s['original']} → {s['replacement']} share no synset in the same part of speech and form")
        # the adversarial text is the original with the logged words replaced, in order, and nothing else
        # (words as the attack segments them: runs of letters, digits, ' - _; everything between stays)
        words_o, words_a = WORD.findall(r["original"]), WORD.findall(r["adversarial"])
        if WORD.sub("", r["original"]) != WORD.sub("", r["adversarial"]):
            violations.append(f"{where}: the text between the words changed")
        changed = [(a, b) for a, b in zip(words_o, words_a) if a != b]
        logged = [(s["original"], s["replacement"]) for s in sorted(r["substitutions"], key=lambda s: s["index"])]
        if len(words_o) != len(words_a) or [(a.lower(), b.lower()) for a, b in changed] != [(a.lower(), b.lower()) for a, b in logged]:
            violations.append(f"{where}: adversarial text differs from the original elsewhere than the logged words ({changed} vs {logged})")
    print(f"{args[0]}: {examples} examples, {successes} successes, {substitutions} substitutions; "
          f"{successes - sum('not a flip' in v for v in violations)} real flips; "
          f"{substitutions - sum('share no synset' in v for v in violations)} same-POS, same-form WordNet synonyms; "
          f"{len(violations)} violations")
    for v in violations:
        print("  " + v)
    sys.exit(1 if violations else 0)


main()
