"""How Data Designer renders an LLM column's prompts: the variables a template inserts, and the response recipe.

The response recipe is the output schema and format instructions of structured, judge and code columns that Data
Designer adds to the prompts it sends.
"""

from __future__ import annotations

from typing import Any

from data_designer.config.utils.misc import extract_keywords_from_jinja2_template
from data_designer.engine.column_generators.utils.prompt_renderer import create_response_recipe


def template_variables(template: str) -> set[str]:
    """The names a Jinja2 prompt template inserts, as Data Designer finds them."""
    return extract_keywords_from_jinja2_template(template)


def response_recipe(column: Any, model: Any) -> Any:
    """Data Designer's response recipe of an LLM column: ``apply_recipe_to_user_prompt`` and
    ``apply_recipe_to_system_prompt`` give the prompts as sent."""
    return create_response_recipe(column, model)
