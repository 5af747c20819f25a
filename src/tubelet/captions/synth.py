"""Captions of the built-in motion dataset, and reading its three facts back out of a caption.

:func:`captions_for` turns what the generator drew (``Scene.facts`` of
:func:`tubelet.data.synth.render_scene`) into several varied sentences: the object ("a bright
digit", "a dark photo of a cat"), its motion and the motion's direction ("slides to the left",
"turns clockwise", "shrinks", "fades in") and, for the event-order pair, the order of the two
events ("sways from side to side, then bobs up and down"). Templates and synonyms vary; the
three facts never do, and :func:`caption_facts` reads them back from any caption in this
vocabulary (a generated one or a model's): ``{"motion", "direction", "order"}`` with

- ``motion``: ``translate_x``, ``translate_y``, ``rotate``, ``scale``, ``fade``, ``sway_bob``
  (the names of :data:`tubelet.data.synth.PAIRS`), or None when no motion is named;
- ``direction``: ``left`` / ``right`` (translate_x), ``up`` / ``down`` (translate_y),
  ``anticlockwise`` / ``clockwise`` (rotate), ``grow`` / ``shrink`` (scale), ``in`` / ``out``
  (fade); None for sway_bob, whose sideways and vertical signs are not part of its class;
- ``order``: ``sway_bob`` (sways first) or ``bob_sway`` for the event-order pair, else None.

The first class of every pair is the forward motion and the second its reversal
(``facts["reversed"]``): moving left / right, up / down, anticlockwise / clockwise, growing /
shrinking, fading in / out, swaying then bobbing / bobbing then swaying.
:func:`facts_correct` is the captioning task's own accuracy: motion, direction and order all right.
"""

from __future__ import annotations

import numpy as np

from .metrics import tokenize

# The reading of each motion played forwards and backwards: (forward, reversed) directions.
DIRECTIONS = {"translate_x": ("left", "right"), "translate_y": ("up", "down"),
              "rotate": ("anticlockwise", "clockwise"), "scale": ("grow", "shrink"),
              "fade": ("in", "out")}
ORDERS = ("sway_bob", "bob_sway")

# -- writing ------------------------------------------------------------------------------------
# Verb phrases (third person, present) for each (motion, direction).
PHRASES = {
    ("translate_x", "left"): ["moves to the left", "slides left", "drifts leftwards",
                              "travels from right to left", "glides to the left",
                              "moves left across the frame"],
    ("translate_x", "right"): ["moves to the right", "slides right", "drifts rightwards",
                               "travels from left to right", "glides to the right",
                               "moves right across the frame"],
    ("translate_y", "up"): ["moves up", "slides upwards", "rises", "drifts towards the top",
                            "travels from bottom to top", "climbs up the frame"],
    ("translate_y", "down"): ["moves down", "slides downwards", "sinks", "drifts towards the bottom",
                              "travels from top to bottom", "falls down the frame"],
    ("rotate", "anticlockwise"): ["turns anticlockwise", "rotates counterclockwise",
                                  "spins anticlockwise", "turns counter-clockwise",
                                  "swings round anticlockwise like a clock hand"],
    ("rotate", "clockwise"): ["turns clockwise", "rotates clockwise", "spins clockwise",
                              "turns in the clockwise direction",
                              "swings round clockwise like a clock hand"],
    ("scale", "grow"): ["grows", "gets bigger", "grows larger", "expands", "becomes larger",
                        "swells in size"],
    ("scale", "shrink"): ["shrinks", "gets smaller", "shrinks in size", "contracts",
                          "becomes smaller", "dwindles"],
    ("fade", "in"): ["fades in", "appears", "gradually appears", "comes into view",
                     "fades into view", "emerges"],
    ("fade", "out"): ["fades out", "disappears", "gradually disappears", "fades away", "vanishes",
                      "fades out of view"],
}
# The event-order pair: each event as a verb phrase and as a gerund ("after swaying, ...").
SWAY = [("sways from side to side", "swaying from side to side"), ("sways sideways", "swaying sideways"),
        ("sways left and right", "swaying left and right")]
BOB = [("bobs up and down", "bobbing up and down"), ("bobs vertically", "bobbing vertically"),
       ("bobs", "bobbing")]
ORDER_FRAMES = ["{subject} {first}, then {second}", "{subject} first {first} and then {second}",
                "{subject} {first} before it {second}", "after {first_ing}, {subject} {second}",
                "{subject} {first} and afterwards {second}"]
SENTENCE_FRAMES = ["{subject} {verb}", "in this video {subject} {verb}", "we see {subject} that {verb}",
                   "{subject} {verb} in front of a textured background", "here {subject} {verb}"]

TONES = {"bright": ["bright", "light", "pale"], "dark": ["dark", "dark", "dark-coloured"]}
PHOTO_NAMES = {"astronaut": ["an astronaut"], "coffee": ["a cup of coffee", "a coffee cup"],
               "cat": ["a cat"], "rocket": ["a rocket"]}


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _subject(facts: dict, rng: np.random.Generator) -> str:
    tone = _pick(rng, TONES[facts["tone"]])
    if facts["kind"] == "digit":
        return f"a {tone} {_pick(rng, ['digit', 'handwritten digit', 'number', 'handwritten number'])}"
    thing = _pick(rng, PHOTO_NAMES[facts["photo"]])
    return f"a {tone} {_pick(rng, ['photo', 'picture', 'image'])} of {thing}"


def _sentence(facts: dict, rng: np.random.Generator) -> str:
    subject = _subject(facts, rng)
    if facts["motion"] == "sway_bob":
        events = [_pick(rng, SWAY), _pick(rng, BOB)]
        if facts["reversed"]:
            events.reverse()
        (first, first_ing), (second, _) = events
        text = _pick(rng, ORDER_FRAMES).format(subject=subject, first=first, first_ing=first_ing,
                                               second=second)
    else:
        verb = _pick(rng, PHRASES[facts["motion"], _truth(facts)["direction"]])
        text = _pick(rng, SENTENCE_FRAMES).format(subject=subject, verb=verb)
    return text[0].upper() + text[1:] + "."


def captions_for(facts: dict, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` different sentences describing a video with these facts (``Scene.facts``).

    Each names the object and its tone, the motion and its direction (and the event order for the
    event-order pair), in a template and with synonyms drawn from ``rng``.
    """
    captions: list[str] = []
    for _ in range(50 * n):  # a few hundred combinations: n distinct ones come quickly
        text = _sentence(facts, rng)
        if text not in captions:
            captions.append(text)
            if len(captions) == n:
                break
    return captions


# -- reading ------------------------------------------------------------------------------------
SWAY_WORDS = {"sway", "sways", "swaying", "swayed"}
BOB_WORDS = {"bob", "bobs", "bobbing", "bobbed"}
ANTICLOCKWISE = {"anticlockwise", "anti-clockwise", "counterclockwise", "counter-clockwise"}
ROTATE_WORDS = {"turn", "turns", "turning", "rotate", "rotates", "rotating", "spin", "spins",
                "spinning", "clockwise"} | ANTICLOCKWISE
GROW_WORDS = {"grow", "grows", "growing", "bigger", "larger", "expand", "expands", "expanding",
              "swell", "swells", "swelling", "enlarges"}
SHRINK_WORDS = {"shrink", "shrinks", "shrinking", "smaller", "contract", "contracts", "contracting",
                "dwindle", "dwindles", "dwindling"}
APPEAR_WORDS = {"appear", "appears", "appearing", "emerge", "emerges", "emerging"}
VANISH_WORDS = {"disappear", "disappears", "disappearing", "vanish", "vanishes", "vanishing"}
FADE_WORDS = {"fade", "fades", "fading"}
ORDER_WORDS = {"then", "before", "after", "afterwards", "first", "followed", "next", "later",
               "finally"}
# Where the object goes; the last such word of a caption wins ("from right to left": left).
PLACE_WORDS = {"left": "left", "leftwards": "left", "leftward": "left",
               "right": "right", "rightwards": "right", "rightward": "right",
               "up": "up", "upwards": "up", "upward": "up", "top": "up", "rises": "up", "rising": "up",
               "climbs": "up", "climbing": "up",
               "down": "down", "downwards": "down", "downward": "down", "bottom": "down",
               "sinks": "down", "sinking": "down", "falls": "down", "falling": "down",
               "descends": "down", "descending": "down"}
AXES = {"left": "translate_x", "right": "translate_x", "up": "translate_y", "down": "translate_y"}


def _fade_direction(words: list[str]) -> str | None:
    for i, word in enumerate(words):
        if word in APPEAR_WORDS:
            return "in"
        if word in VANISH_WORDS:
            return "out"
        after = words[i + 1] if i + 1 < len(words) else ""
        if word in FADE_WORDS and after in ("in", "into"):
            return "in"
        if word in FADE_WORDS and after in ("out", "away"):
            return "out"
        if word == "into" and after == "view":  # comes into view
            return "in"
    return None


def caption_facts(caption: str) -> dict:
    """``{"motion", "direction", "order"}`` named by a caption (see the module's vocabulary);
    a fact the caption does not name is None."""
    words = tokenize(caption)
    found = {"motion": None, "direction": None, "order": None}
    sway = next((i for i, w in enumerate(words) if w in SWAY_WORDS), None)
    bob = next((i for i, w in enumerate(words) if w in BOB_WORDS), None)
    if sway is not None or bob is not None:
        found["motion"] = "sway_bob"
        # An order needs both events and a word that orders them ("sways and bobs" has none).
        if sway is not None and bob is not None and ORDER_WORDS & set(words):
            first, second = sorted((sway, bob))
            sway_first = sway < bob
            if "after" in words[first + 1:second]:  # "bobs after swaying": the second happened first
                sway_first = not sway_first
            found["order"] = ORDERS[0] if sway_first else ORDERS[1]
        return found
    if any(w in ROTATE_WORDS for w in words):
        found["motion"] = "rotate"
        if any(w in ANTICLOCKWISE for w in words):
            found["direction"] = "anticlockwise"
        elif "clockwise" in words:
            found["direction"] = "clockwise"
        return found
    grow, shrink = any(w in GROW_WORDS for w in words), any(w in SHRINK_WORDS for w in words)
    if grow or shrink:
        found["motion"] = "scale"
        found["direction"] = None if grow and shrink else "grow" if grow else "shrink"
        return found
    fade = _fade_direction(words)
    if fade is not None or any(w in FADE_WORDS for w in words):
        found["motion"], found["direction"] = "fade", fade
        return found
    places = [PLACE_WORDS[w] for w in words if w in PLACE_WORDS]
    if places:
        found["motion"], found["direction"] = AXES[places[-1]], places[-1]
    return found


def _truth(facts: dict) -> dict:
    """The ``{"motion", "direction", "order"}`` of a video's ``Scene.facts``."""
    motion, backwards = facts["motion"], bool(facts["reversed"])
    if motion == "sway_bob":
        return {"motion": motion, "direction": None, "order": ORDERS[backwards]}
    return {"motion": motion, "direction": DIRECTIONS[motion][backwards], "order": None}


def facts_correct(predicted: str, facts: dict) -> bool:
    """Whether a caption names the motion, its direction and the event order of a video with these
    ``Scene.facts`` all rightly (the object's description is not scored)."""
    return caption_facts(predicted) == _truth(facts)
