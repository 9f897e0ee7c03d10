"""Learners: networks the ``rounds`` schedule trains batch by batch (``conf/learner``). One file per family."""
