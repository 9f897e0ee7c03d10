"""A lower-is-better evaluator for the sweeper tests: the classifier evaluator's test error, 100 − accuracy."""

from __future__ import annotations

from distillkit.evaluators.classifier import ClassifierEvaluator
from distillkit.stages import EvalReport, Evaluator, Metric


class ErrorEvaluator(Evaluator):
    """Reports ``error`` (%, lower is better) from a :class:`ClassifierEvaluator` built with the same settings."""

    primary_metric = "error"
    higher_is_better = False

    def __init__(self, **settings):
        self.classifier = ClassifierEvaluator(**settings)

    def check(self, ctx) -> None:
        self.classifier.check(ctx)

    def __call__(self, distilled, ctx) -> EvalReport:
        return self.as_error(self.classifier(distilled, ctx))

    def assess(self, models, ctx) -> EvalReport:
        return self.as_error(self.classifier.assess(models, ctx))

    def as_error(self, report: EvalReport) -> EvalReport:
        error = Metric.of([100.0 - run for run in report.primary_metric.runs])
        return EvalReport({**report.metrics, "error": error}, self.primary_metric, self.higher_is_better,
                          report.details, unit="%")
