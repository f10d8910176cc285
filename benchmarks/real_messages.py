"""One hundred varied messages a person might send a chat assistant: the
real model's prompts in the benchmarks (questions, requests, small talk,
advice; short and long).  Twenty topics, each asked five ways."""

from __future__ import annotations

TOPICS = [
    ("cooking pasta", "my pasta always sticks together"),
    ("sleeping better", "I wake up at 3 am every night"),
    ("learning the guitar", "my fingers hurt after practice"),
    ("saving money", "I spend too much on takeaway food"),
    ("running a first 5k", "I get out of breath after two minutes"),
    ("growing tomatoes", "the leaves on my tomato plants turn yellow"),
    ("writing a cover letter", "I have an interview for a library job"),
    ("learning Spanish", "I keep forgetting new words"),
    ("keeping a cat happy indoors", "my cat scratches the sofa"),
    ("planning a trip to Japan", "I have ten days and a small budget"),
    ("fixing a slow laptop", "my laptop takes five minutes to start"),
    ("making friends in a new city", "I moved here a month ago and know nobody"),
    ("studying for exams", "I cannot focus for more than ten minutes"),
    ("baking bread", "my bread comes out flat and dense"),
    ("public speaking", "my voice shakes when I present at work"),
    ("the history of Rome", "my son asked me why Rome fell"),
    ("climate change", "my friend says one person cannot make a difference"),
    ("starting to meditate", "my mind wanders all the time"),
    ("choosing a first programming language", "I want to build small games"),
    ("caring for a houseplant", "my plant drops its leaves in winter"),
]

FORMS = [
    "How do I get started with {topic}?",
    "Can you give me three tips about {topic}?",
    "{situation}. What should I do?",
    "Explain {topic} to me like I am ten years old.",
    "I'm curious about {topic}, what's the most important thing to know?",
]

MESSAGES = [form.format(topic=topic, situation=situation[0].upper() + situation[1:])
            for topic, situation in TOPICS for form in FORMS]
assert len(MESSAGES) == 100 and len(set(MESSAGES)) == 100
