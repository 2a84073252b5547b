"""A small SYNTHETIC emotional speech corpus, spoken by espeak-ng and shaped by sox.

It exists so training, evaluation and export can be exercised end to end without any licensed
corpus. It is not human speech and a model trained only on it says nothing about real emotion.

Each utterance has two channels: the words (`text_emotion`) and the voice (`voice_emotion`,
the prosody: rate, pitch, pitch range, loudness, timbre). Rule for the label: at most one
channel carries a non-neutral emotion, and the label is that emotion (neutral when neither
does). Three kinds of item follow from it:

- congruent: emotional words in the same emotional voice (most items);
- text-led:  emotional words in a neutral voice, label = the words' emotion;
- voice-led: neutral words in an emotional voice, label = the voice's emotion.

`conflict_fraction` of each non-neutral class is text-led or voice-led (half each), so a model
must use both channels. Words and voice never express two different emotions, since such an
item has no principled label. Both channels are written to the manifest (extra fields).

Splits are by voice and by sentence: no espeak voice and no sentence is in two splits, so test
scores measure generalisation to unseen speakers and unseen wording. Everything is
deterministic for a seed; audio is 16 kHz mono 16-bit WAV.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np

from memocmt.audio import SAMPLE_RATE
from memocmt.manifest import FOUR_CLASSES, Manifest, Utterance, write_manifest

logger = logging.getLogger("memocmt")

CORPUS = "synthetic"
CONFLICT_FRACTION = 0.2
TEST_FRACTION, VAL_FRACTION = 0.2, 0.1  # of voices, sentences and items per class
DEFAULT_JOBS = 2

# espeak-ng voices: language + variant (m1..m7 male, f1..f5 female timbres)
VOICES = (
    "en-us+m1", "en-us+f1", "en-us+m3", "en-us+f3", "en+m2", "en+f2",
    "en-gb+m4", "en-gb+f4", "en-gb-x-rp+m5", "en-gb-x-rp+f5", "en-029+m6", "en-gb-scotland+m7",
)

SENTENCES: dict[str, tuple[str, ...]] = {
    "angry": (
        "I am furious that you lied to me again.",
        "Get out of my house right now!",
        "How dare you speak to me like that?",
        "This is the last time I put up with your nonsense.",
        "Stop touching my things, I am sick of it!",
        "You ruined everything and you do not even care!",
        "I told you a hundred times, and you never listen!",
        "Don't you ever walk away from me when I am talking!",
        "That is outrageous, I want my money back now!",
        "You broke your promise and I am so angry at you.",
        "Shut up and let me finish for once!",
        "I hate the way you treat people around you.",
        "Who gave you the right to read my letters?",
        "I have had enough of your stupid excuses!",
        "You cheated, and everybody knows it!",
        "Leave me alone before I lose my temper!",
        "This service is a disgrace and I am furious!",
        "You wrecked my car and then you lied about it!",
        "I am fed up with being ignored in this office!",
        "Stop yelling at my kids, you horrible man!",
        "You stole my idea and took all the credit!",
        "I can't believe you slammed the door in my face!",
        "Answer me, why did you betray me like that?",
        "This is completely unacceptable, fix it now!",
        "I am so mad I could scream at you!",
        "Never call me a liar again, do you hear me?",
        "You wasted my whole day with your lies!",
        "Get your hands off me this instant!",
    ),
    "happy": (
        "I am so happy to see you again!",
        "We won the championship, this is amazing!",
        "What a wonderful surprise, thank you so much!",
        "I got the job, I can't stop smiling!",
        "This is the best day of my whole life!",
        "I love this song, it makes me want to dance!",
        "Our baby was born this morning and she is perfect!",
        "Hooray, the holidays start tomorrow!",
        "You make me laugh every single day.",
        "I passed the exam with top marks, I'm thrilled!",
        "The sun is shining and everything feels great!",
        "We are getting married in the spring, how exciting!",
        "Thank you, this gift is absolutely lovely!",
        "I am delighted that you could all come tonight.",
        "What a fantastic party, everyone is having fun!",
        "My best friend is visiting next week, I can't wait!",
        "I finally finished my book and it feels wonderful!",
        "That was hilarious, tell me another joke!",
        "We bought our first house today, I'm overjoyed!",
        "I feel so lucky to have friends like you.",
        "Yes! My team scored in the last minute!",
        "The kids loved the beach, it was pure joy.",
        "I am proud of you, you did a brilliant job!",
        "Good news, the doctor says I am completely healthy!",
        "This cake is delicious, you are a great cook!",
        "What a beautiful morning, I feel fantastic!",
        "We are going on vacation to the sea, yay!",
        "I am bursting with joy right now!",
    ),
    "sad": (
        "I miss my grandmother so much since she died.",
        "Nobody came to my birthday party this year.",
        "I lost my job today and I don't know what to do.",
        "My dog passed away last night.",
        "I feel so lonely in this empty house.",
        "She left me and she is never coming back.",
        "I failed again, no matter how hard I try.",
        "It hurts to remember how happy we used to be.",
        "I cried all night after the funeral.",
        "Everything I loved is gone now.",
        "My best friend moved away and I feel lost.",
        "I am so tired of being sad all the time.",
        "We had to sell the family home, it broke my heart.",
        "I never got to say goodbye to him.",
        "The doctor said there is nothing more they can do.",
        "I feel like nobody cares about me anymore.",
        "Our old cat died in my arms this morning.",
        "I wish things could go back to the way they were.",
        "It is raining and I just want to stay in bed and cry.",
        "They forgot about me again, as always.",
        "I am heartbroken that the wedding was cancelled.",
        "My father does not recognise me anymore.",
        "I lost all the photos of my mother.",
        "The house feels so quiet without the children.",
        "I am sorry, I just can't stop crying.",
        "He was my only brother and now he is gone.",
        "I gave it everything and it still was not enough.",
        "Sometimes I feel so hopeless and alone.",
    ),
    "neutral": (
        "The meeting starts at ten o'clock on Tuesday.",
        "Please put the folder on the second shelf.",
        "The train to the city leaves from platform four.",
        "I usually buy bread at the shop on the corner.",
        "The report has twelve pages and three tables.",
        "Turn left at the traffic lights and then go straight on.",
        "The library closes at six in the evening.",
        "We need two more chairs for the table.",
        "The bus stop is next to the post office.",
        "Water boils at one hundred degrees Celsius.",
        "My phone number ends with four five six.",
        "The package should arrive on Thursday.",
        "The kitchen is at the end of the hallway.",
        "Please send me the file by email.",
        "The parking garage has three levels.",
        "I will check the schedule and call you back.",
        "The printer is on the third floor.",
        "There are seven days in a week.",
        "The shop sells pens, paper and envelopes.",
        "The form asks for your name and address.",
        "We moved the meeting to the small room.",
        "The store opens at nine on weekdays.",
        "The keys are in the top drawer of the desk.",
        "The museum is about two kilometres from here.",
        "I have a dentist appointment next Monday.",
        "The green folder contains last year's invoices.",
        "The bridge was built in the nineteenth century.",
        "You can pay by card or in cash.",
        "The recipe needs two eggs and a cup of flour.",
        "The office is closed on public holidays.",
        "Please write your answer in the box below.",
        "The plane lands at half past three.",
    ),
}


@dataclass(frozen=True)
class Prosody:
    """How espeak-ng and sox colour one utterance's voice."""

    rate_wpm: int  # espeak -s, words per minute (default 175)
    pitch: int  # espeak -p, base pitch 0..99 (default 50)
    pitch_range: str  # SSML prosody range: x-low, low, medium, high, x-high
    amplitude: int  # espeak -a, 0..200 (default 100)
    word_gap_10ms: int  # espeak -g, extra pause between words in units of 10 ms
    gain_db: float  # level after peak normalisation to -1 dBFS
    effects: tuple[str, ...] = ()  # extra sox effects (timbre)


# Per emotion: (rate, pitch, range, amplitude, word gap, gain dB, sox effects)
VOICE_STYLES = {
    "neutral": (170, 48, "medium", 100, 0, -6.0, ()),
    "angry": (205, 62, "x-high", 180, 0, -1.0, ("overdrive", "8", "treble", "+4")),
    "happy": (190, 72, "x-high", 130, 0, -3.0, ("treble", "+3")),
    "sad": (120, 30, "x-low", 70, 4, -12.0, ("lowpass", "2800")),
}


@dataclass(frozen=True)
class SyntheticItem:
    """The plan for one utterance, drawn before any audio is made."""

    id: str
    text: str
    text_emotion: str
    voice_emotion: str
    label: str
    kind: str  # "congruent" | "text-led" | "voice-led" | "neutral"
    voice: str
    split: str
    prosody: Prosody


def require_tools() -> None:
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"Synthetic speech needs {' and '.join(missing)}; install them with `apt-get install espeak-ng sox`."
        )


def _partition(values: Sequence[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """Shuffle and cut into test/val/train parts (at least one each when there are three or more)."""
    order = [values[i] for i in rng.permutation(len(values))]
    n_test = _share(len(order), TEST_FRACTION)
    n_val = _share(len(order), VAL_FRACTION)
    return {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}


def _share(n: int, fraction: float) -> int:
    return max(1 if n >= 3 else 0, int(round(n * fraction)))


def _prosody(emotion: str, rng: np.random.Generator) -> Prosody:
    rate, pitch, pitch_range, amplitude, gap, gain, effects = VOICE_STYLES[emotion]
    return Prosody(
        rate_wpm=int(rate * rng.uniform(0.92, 1.08)),
        pitch=int(np.clip(pitch + rng.integers(-6, 7), 0, 99)),
        pitch_range=pitch_range,
        amplitude=int(amplitude * rng.uniform(0.9, 1.1)),
        word_gap_10ms=gap,
        gain_db=round(gain + rng.uniform(-1.0, 1.0), 1),
        effects=effects,
    )


def plan_corpus(
    n_per_class: int, *, seed: int = 0, conflict_fraction: float = CONFLICT_FRACTION, voices: Sequence[str] = VOICES
) -> list[SyntheticItem]:
    """Every utterance's text, voice, prosody, label and split; pure and deterministic for a seed."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, not {n_per_class}.")
    if not 0.0 <= conflict_fraction <= 1.0:
        raise ValueError(f"conflict_fraction must be in [0, 1], not {conflict_fraction}.")
    if len(voices) < 3:
        raise ValueError(f"At least 3 voices are needed for a train/val/test split by voice, got {len(voices)}.")
    rng = np.random.default_rng(seed)
    voice_parts = _partition(tuple(voices), rng)
    sentence_parts = {emotion: _partition(SENTENCES[emotion], rng) for emotion in FOUR_CLASSES}
    items = []
    for label in FOUR_CLASSES:
        counts = {"test": _share(n_per_class, TEST_FRACTION), "val": _share(n_per_class, VAL_FRACTION)}
        counts["train"] = max(0, n_per_class - counts["test"] - counts["val"])
        n_mixed = 0 if label == "neutral" else int(round(n_per_class * conflict_fraction))
        kinds = ["voice-led"] * ((n_mixed + 1) // 2) + ["text-led"] * (n_mixed // 2)
        kinds += ["neutral" if label == "neutral" else "congruent"] * (n_per_class - n_mixed)
        kinds = [kinds[i] for i in rng.permutation(len(kinds))]
        for split in ("train", "val", "test"):
            split_kinds, kinds = kinds[: counts[split]], kinds[counts[split]:]
            for kind in split_kinds:
                text_emotion = "neutral" if kind == "voice-led" else label
                voice_emotion = "neutral" if kind == "text-led" else label
                pool = sentence_parts[text_emotion][split]
                items.append(SyntheticItem(
                    id="", text=pool[int(rng.integers(len(pool)))], text_emotion=text_emotion,
                    voice_emotion=voice_emotion, label=label, kind=kind,
                    voice=voice_parts[split][int(rng.integers(len(voice_parts[split])))],
                    split=split, prosody=_prosody(voice_emotion, rng),
                ))
    return [SyntheticItem(**{**item.__dict__, "id": f"synthetic-{item.label}-{i:05d}"}) for i, item in enumerate(items)]


def render(item: SyntheticItem, out_path: Path) -> None:
    """Speak one planned item into a 16 kHz mono 16-bit WAV file."""
    p = item.prosody
    ssml = f'<speak><prosody range="{p.pitch_range}">{escape(item.text)}</prosody></speak>'
    espeak = ["espeak-ng", "-m", "-v", item.voice, "-s", str(p.rate_wpm), "-p", str(p.pitch), "-a", str(p.amplitude),
              "-g", str(p.word_gap_10ms), "--stdout", ssml]
    speech = _run(espeak).stdout
    sox = ["sox", "-q", "-D", "-R", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
           str(out_path), *p.effects, "norm", "-1", "gain", str(p.gain_db)]
    _run(sox, stdin=speech)


def _run(cmd: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"{cmd[0]} failed ({message[-1] if message else 'exit ' + str(result.returncode)}).")
    return result


README = """# SYNTHETIC emotional speech (not human speech)

Every file here was generated by `memocmt.synthetic` with the espeak-ng speech synthesiser and
sox: the emotion is acted by rule (rate, pitch, pitch range, loudness, timbre) and by the words.
It exists to exercise training and evaluation without a licensed corpus. Results on it say
nothing about real emotional speech. Manifest rows carry corpus="synthetic" and
text_source="synthetic"; `text_emotion`, `voice_emotion` and `kind` say which channel carries
the label (see the module docstring for the rule).

Utterances: {n}, seed {seed}, {n_per_class} per class, conflict fraction {conflict_fraction}.
"""


def generate_synthetic_corpus(
    out_dir: str | os.PathLike,
    n_per_class: int = 50,
    seed: int = 0,
    *,
    conflict_fraction: float = CONFLICT_FRACTION,
    voices: Sequence[str] = VOICES,
    jobs: int = DEFAULT_JOBS,
) -> Manifest:
    """Synthesise the corpus into `out_dir` (wav/, manifest.jsonl, README.md) and return its manifest."""
    require_tools()
    plan = plan_corpus(n_per_class, seed=seed, conflict_fraction=conflict_fraction, voices=voices)
    out_dir = Path(out_dir).resolve()
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "wav" / f"{item.id}.wav" for item in plan]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(render, plan, paths))  # subprocesses do the work, so threads run in parallel
    items = [
        Utterance(
            audio=path, text=item.text, label=item.label, speaker=item.voice, split=item.split, corpus=CORPUS,
            id=item.id, text_source="synthetic",
            extra={"text_emotion": item.text_emotion, "voice_emotion": item.voice_emotion, "kind": item.kind},
        )
        for item, path in zip(plan, paths)
    ]
    manifest = Manifest.from_items(items, FOUR_CLASSES)
    write_manifest(out_dir / "manifest.jsonl", manifest)
    (out_dir / "README.md").write_text(
        README.format(n=len(items), seed=seed, n_per_class=n_per_class, conflict_fraction=conflict_fraction),
        encoding="utf-8",
    )
    logger.info("Wrote %d synthetic utterances to %s", len(items), out_dir)
    return manifest
