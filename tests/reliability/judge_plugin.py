"""A filter for the report test: rejects a record with a reason that quotes model-written text (a judge's
rationale), as real judges and verifiers do."""

from dataflywheel.ops import Filter, OpConfig, register
from dataflywheel.records import instruction_text, response_text


@register
class SaysWhy(Filter):
    """Rejects records whose instruction holds JUDGE, giving the response as the judge's rationale."""

    name = "reliability.says_why"
    Config = OpConfig

    def reject_reason(self, record):
        if "JUDGE" in instruction_text(record):
            return f"the judge said: {response_text(record)}"
        return None
