# SPDX-License-Identifier: AGPL-3.0-or-later
"""Build ``whistle/core/wordlists/es.txt``, the Spanish receipt-passphrase word list (issue 11, item 7).

The ``diceware`` package's Spanish list is drawn from a corpus: a third of it is names, places,
foreign words and inflected forms (``meijide``, ``cafiero``, ``lewis``, ``zurich``, ``winston``,
``taylor`` …), which a frightened source cannot spell back from a paper note. This script keeps
only the common Spanish words of that list, reproducibly, from three pinned inputs:

- ``diceware`` 1.0.1 (PyPI), ``diceware/wordlists/wordlist_es.txt`` (8,192 words), sha256
  ``20e7e54f4d1fa1d7e23aca0d11002ef42b1ac140ff9f3494b8e2f5f0ad686c35``;
- Debian ``wspanish`` 1.0.30, ``/usr/share/dict/spanish`` (86,016 words, public domain), sha256
  ``6b26adc955ec682e41e98d626d0ed1f778511065ee1f7f19c28e8b3cb574b9b6``;
- Debian ``hunspell-es`` 1:7.5.0-1 (RLA-ES), ``/usr/share/hunspell/es_ES.dic``, sha256
  ``7a32942f6936329ea0bc311a6288d193a29cb05b3dd79a2e6115a335f7197f5e``.

(``apt-get install wspanish hunspell-es``; ``.ci/run`` installs both.) A word of the diceware list
is kept when, in this order:

1. it is 4 to 8 letters, ``a``–``z`` only;
2. it is, spelled exactly so, a word of ``wspanish`` (so it is a Spanish word, and one written
   without accent or ``ñ``: what the note shows is the right spelling, and ``año`` never turns
   into ``ano``);
3. it is not a proper noun: ``es_ES.dic`` has it only capitalised (``Carlos``, ``Rusia``) — a word
   the dictionary has both ways (``banco``/``Banco``) stays;
4. it is not in :data:`EXCLUDED` below: names, places, surnames and foreign words the two
   dictionaries let through, and words that are vulgar, sexual, violent or offensive somewhere
   in the Spanish-speaking world;
5. it is not the feminine (``-a``, ``-as``) of a kept ``-o``/``-os`` word (``abierta`` beside
   ``abierto``): one of a pair a source could mix up is enough;
6. no kept word is a prefix of it (none is today; checked so that a future input cannot make the
   list ambiguous for a source who types the words without spaces).

The list keeps the diceware order (alphabetical), one word per line, LF, no duplicates. A
passphrase then has ``ceil(90 / log2(N))`` words (``whistle.core.passphrase.word_count``).

Usage::

    python scripts/build_wordlist_es.py            # rewrite whistle/core/wordlists/es.txt
    python scripts/build_wordlist_es.py --check    # exit 1 if the shipped file differs

Inputs with another checksum are refused: a new version of a dictionary is a deliberate change
(update the table above, docs/protocol.md section 4, and ship the new list).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "whistle" / "core" / "wordlists" / "es.txt"
WSPANISH = Path("/usr/share/dict/spanish")
HUNSPELL = Path("/usr/share/hunspell/es_ES.dic")
SHA256 = {
    "wordlist_es.txt": "20e7e54f4d1fa1d7e23aca0d11002ef42b1ac140ff9f3494b8e2f5f0ad686c35",
    "spanish": "6b26adc955ec682e41e98d626d0ed1f778511065ee1f7f19c28e8b3cb574b9b6",
    "es_ES.dic": "7a32942f6936329ea0bc311a6288d193a29cb05b3dd79a2e6115a335f7197f5e",
}
WORD = re.compile(r"[a-z]{4,8}")

# Names and surnames; places; foreign words; vulgar, sexual or offensive words (and slurs);
# violence and religion; a word that is also a verb form written without its accent (sera), and
# nursery words. Read by people: one group a line; a word the filters above already drop is harmless.
_EXCLUDED = """
    alonso arcadio asenjo asensio azcona balboa barral barreda basilio benito bernarda bernardo
    berta bruno camilo campillo cardona carla carmen carola carrero castro cavero celia cerpa
    chano claudia cobo dante delfina delia diego elijan enciso escobar estrada fajardo ferrero
    fidalgo figo fito frida gamarra gamboa garay garrido godoy guido helena herrera herodes
    jacinto juliano juvenal lucas luisa lula manolo manuela mariano marta martina maura mauro
    melgar mena merlo minerva miranda muza nacha nadal negrete nora olmedo ortega osuna padilla
    pascual pedrosa pepa pepe pereda petra quesada quique rita romeo roque salcedo sancho serna
    serpa silva teresa tiberio tito vallejo zurita
    alicante altea amazonia ares aries atenea baden basilea bejarano caracas colombo corinto
    cuzco elche escocia escorial galega galileo gante giralda gomera greco guaira guayas holanda
    irlanda jalapa java judea liria llosa lora manila neptuno olimpo oporto pegaso pinocho
    prusia rusia sajonia saturno siria tabasco tauro troya urania urano utrera vaticano venus
    vitoria volvo
    branca chalet della festa grant honoris lord mega pseudo royal royo senior sine
    burdel coger coja cojera concha culo falo fecal follar mear mierda mulata orgasmo orinar
    pinche puto chulo chusma cretino incesto lujuria sadismo obscena obsceno braga bragueta
    pubis uretra violada chola gitana meco nipona
    abortar aborto cianuro fusilar tiroteo judas lucifer cristo
    sera tate tato
"""
EXCLUDED: frozenset[str] = frozenset(_EXCLUDED.split())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def diceware_path() -> Path:
    from diceware.wordlist import get_wordlist_path

    return Path(get_wordlist_path("es"))


def inputs() -> dict[str, Path]:
    """The three input files, by the name :data:`SHA256` knows them by."""
    return {"wordlist_es.txt": diceware_path(), "spanish": WSPANISH, "es_ES.dic": HUNSPELL}


def missing_inputs() -> list[str]:
    """The inputs that are not installed here (the tests skip, naming them)."""
    return [str(path) for path in inputs().values() if not path.is_file()]


def check_inputs() -> None:
    for name, path in inputs().items():
        if not path.is_file():
            raise SystemExit(f"{path} is missing: apt-get install wspanish hunspell-es "
                             "(and pip install diceware==1.0.1)")
        if sha256(path) != SHA256[name]:
            raise SystemExit(f"{path} is not the pinned version (sha256 {sha256(path)}): see the "
                             "docstring of scripts/build_wordlist_es.py")


def build() -> list[str]:
    """The list, from the pinned inputs, in diceware order."""
    check_inputs()
    paths = inputs()
    diceware = [ln.strip() for ln in paths["wordlist_es.txt"].read_text(encoding="utf-8").splitlines()]
    spanish = set(paths["spanish"].read_text(encoding="utf-8").splitlines())
    # es_ES.dic: a count on the first line, then "stem[/FLAGS]" lines.
    stems = [ln.split("/", 1)[0].strip()
             for ln in paths["es_ES.dic"].read_text(encoding="utf-8").splitlines()[1:]]
    lower = {stem for stem in stems if stem[:1].islower()}
    proper = {stem.lower() for stem in stems if stem[:1].isupper()} - lower

    words: list[str] = []
    for word in diceware:
        if (WORD.fullmatch(word) and word in spanish and word not in proper
                and word not in EXCLUDED and word not in words[-1:]):
            words.append(word)
    if len(set(words)) != len(words):
        raise SystemExit("the diceware list has duplicates: not the pinned file?")
    kept = set(words)
    words = [w for w in words
             if not (w.endswith("a") and w[:-1] + "o" in kept)
             and not (w.endswith("as") and w[:-2] + "os" in kept)]
    kept = set(words)
    return [w for w in words if not any(w[:i] in kept for i in range(4, len(w)))]


def render(words: list[str]) -> str:
    return "".join(w + "\n" for w in words)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file, write nothing")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        same = args.output.is_file() and args.output.read_text(encoding="utf-8") == text
        print(f"{args.output}: {'up to date' if same else 'differs from what the inputs give'}")
        return 0 if same else 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8", newline="\n")
    print(f"{args.output}: {text.count(chr(10))} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
