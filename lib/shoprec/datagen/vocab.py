"""The synthetic shop's category tree and per-category vocabularies.

Titles, descriptions, queries and reviews are composed from these words, so an item's text says
what it is, and a language model fine-tuned on behaviour has real signal to use: a user who buys
"trail running shoes" is more likely to buy "hydration vest" than "espresso grinder".
"""

from __future__ import annotations

from dataclasses import dataclass

#: top category → sub-category → leaf → nouns naming products in that leaf.
TREE: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "Electronics": {
        "Audio": {
            "Headphones": ("over-ear headphones", "noise-cancelling headphones", "studio headphones"),
            "Earbuds": ("wireless earbuds", "sport earbuds", "true wireless earbuds"),
            "Speakers": ("bluetooth speaker", "smart speaker", "bookshelf speakers"),
        },
        "Computers": {
            "Laptops": ("ultrabook laptop", "gaming laptop", "business laptop"),
            "Keyboards": ("mechanical keyboard", "wireless keyboard", "ergonomic keyboard"),
            "Mice": ("wireless mouse", "gaming mouse", "vertical mouse"),
        },
        "Phones": {
            "Cases": ("phone case", "rugged phone case", "wallet phone case"),
            "Chargers": ("fast charger", "wireless charging pad", "power bank"),
        },
    },
    "Home & Kitchen": {
        "Cookware": {
            "Pans": ("nonstick frying pan", "cast iron skillet", "stainless saute pan"),
            "Pots": ("stock pot", "dutch oven", "sauce pan"),
        },
        "Coffee": {
            "Coffee Makers": ("espresso machine", "drip coffee maker", "french press"),
            "Grinders": ("burr coffee grinder", "manual coffee grinder", "blade grinder"),
        },
        "Bedding": {
            "Sheets": ("cotton bed sheets", "linen sheet set", "fitted sheet"),
            "Pillows": ("memory foam pillow", "down pillow", "cooling pillow"),
        },
    },
    "Sports & Outdoors": {
        "Running": {
            "Running Shoes": ("trail running shoes", "road running shoes", "racing flats"),
            "Running Gear": ("hydration vest", "running belt", "reflective running jacket"),
        },
        "Camping": {
            "Tents": ("backpacking tent", "family camping tent", "ultralight tent"),
            "Sleeping Bags": ("down sleeping bag", "synthetic sleeping bag", "summer sleeping bag"),
        },
        "Fitness": {
            "Weights": ("adjustable dumbbells", "kettlebell", "weight plates"),
            "Yoga": ("yoga mat", "yoga blocks", "yoga strap"),
        },
    },
    "Office Products": {
        "Writing": {
            "Pens": ("gel pens", "fountain pen", "ballpoint pens"),
            "Notebooks": ("dotted notebook", "spiral notebook", "hardcover journal"),
        },
        "Desk": {
            "Organizers": ("desk organizer", "file sorter", "drawer organizer"),
            "Lamps": ("led desk lamp", "clamp lamp", "architect lamp"),
        },
        "Paper": {
            "Printer Paper": ("copy paper", "premium printer paper", "recycled paper"),
            "Labels": ("shipping labels", "address labels", "label maker tape"),
        },
    },
    "Beauty": {
        "Skin Care": {
            "Moisturizers": ("daily moisturizer", "night cream", "hydrating gel"),
            "Cleansers": ("foaming cleanser", "cleansing balm", "micellar water"),
        },
        "Hair Care": {
            "Shampoo": ("volumizing shampoo", "sulfate-free shampoo", "dandruff shampoo"),
            "Hair Tools": ("hair dryer", "flat iron", "curling wand"),
        },
    },
    "Toys & Games": {
        "Games": {
            "Board Games": ("strategy board game", "family board game", "cooperative board game"),
            "Puzzles": ("jigsaw puzzle", "3d puzzle", "brain teaser puzzle"),
        },
        "Building": {
            "Blocks": ("building blocks set", "magnetic tiles", "construction kit"),
            "Models": ("model airplane kit", "model car kit", "robot kit"),
        },
    },
}

#: top category → adjectives that fit its products.
ADJECTIVES: dict[str, tuple[str, ...]] = {
    "Electronics": ("wireless", "compact", "high-fidelity", "long-battery", "smart", "portable", "premium"),
    "Home & Kitchen": ("durable", "dishwasher-safe", "classic", "modern", "heavy-duty", "easy-clean", "cozy"),
    "Sports & Outdoors": ("lightweight", "breathable", "waterproof", "rugged", "packable", "cushioned"),
    "Office Products": ("smooth-writing", "archival", "refillable", "sturdy", "minimalist", "colorful"),
    "Beauty": ("gentle", "fragrance-free", "nourishing", "vegan", "dermatologist-tested", "salon-grade"),
    "Toys & Games": (
        "educational",
        "colorful",
        "award-winning",
        "creative",
        "family-friendly",
        "challenging",
    ),
}

#: top category → features mentioned in descriptions and reviews.
FEATURES: dict[str, tuple[str, ...]] = {
    "Electronics": ("battery life", "sound quality", "bluetooth pairing", "build quality", "charging speed"),
    "Home & Kitchen": ("heat distribution", "easy cleaning", "soft fabric", "sturdy handle", "even brewing"),
    "Sports & Outdoors": ("grip", "comfort on long runs", "weather protection", "pack size", "stability"),
    "Office Products": ("ink flow", "paper weight", "bright light", "storage space", "sharp print"),
    "Beauty": ("scent", "texture", "hydration", "gentle formula", "lasting results"),
    "Toys & Games": ("replay value", "clear rules", "piece quality", "fun for kids", "challenge level"),
}

#: Syllables brand names are made from (deterministically, per top category).
BRAND_SYLLABLES: tuple[str, ...] = (
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "zen",
    "qui",
    "sol",
    "mar",
    "bel",
    "dor",
    "nix",
    "tal",
    "vor",
    "lum",
)

POSITIVE = (
    "love it",
    "excellent",
    "works perfectly",
    "great value",
    "highly recommend",
    "exceeded expectations",
)
NEUTRAL = ("it is okay", "does the job", "average quality", "fine for the price", "nothing special")
NEGATIVE = ("disappointed", "broke after a week", "poor quality", "would not buy again", "waste of money")


@dataclass(frozen=True)
class Leaf:
    """One leaf of the category tree, with the words its products are named by."""

    index: int
    top: str
    sub: str
    name: str
    nouns: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"{self.top} > {self.sub} > {self.name}"


def leaves() -> list[Leaf]:
    """All leaves in a fixed order (the order is part of the seed's meaning)."""
    out: list[Leaf] = []
    for top, subs in TREE.items():
        for sub, names in subs.items():
            for name, nouns in names.items():
                out.append(Leaf(len(out), top, sub, name, nouns))
    return out


TOPS: tuple[str, ...] = tuple(TREE)
