"""``doc_qa``: the example of Data Designer's workflow-chaining docs, as two assets.

``drafts`` writes a summary, a question and an answer for each seed passage with an LLM, then drops
the scratch columns at the stage boundary; ``chatml`` turns the pairs into ChatML messages with a
schema-transform processor selected as the stage output.

The model endpoint comes from environment variables (see the README):
``DD_ASSETS_LLM_ENDPOINT`` (required to run), ``DD_ASSETS_LLM_API_KEY`` (a value or the name of an
environment variable holding it), ``DD_ASSETS_LLM_MODEL`` and ``DD_ASSETS_LLM_PROVIDER_TYPE``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import data_designer.config as dd

from dd_assets.spec.secrets import ENV_VAR_NAME
from dd_assets.spec.workflow import Stage, Workflow

PROVIDER_NAME = "doc_qa_llm"
API_KEY_VARIABLE = "DD_ASSETS_LLM_API_KEY"
MODEL_ALIAS = "doc-qa-model"
DEFAULT_MODEL = "meta/llama-3.1-8b-instruct"


def passages_path() -> Path:
    """The seed passages shipped with the package (JSON lines with a ``text`` field)."""
    return Path(str(resources.files("dd_assets.examples") / "data" / "passages.jsonl"))


def llm_provider_from_env() -> dict | None:
    """The doc_qa provider from ``DD_ASSETS_LLM_*`` environment variables, or ``None`` when unset."""
    endpoint = os.environ.get("DD_ASSETS_LLM_ENDPOINT")
    if not endpoint:
        return None
    # The key never enters Dagster's config: the provider names the variable that holds it.
    key = os.environ.get(API_KEY_VARIABLE)
    if not key:
        api_key = None  # a local endpoint without authentication
    elif ENV_VAR_NAME.fullmatch(key):
        api_key = key  # DD_ASSETS_LLM_API_KEY=NVIDIA_API_KEY: the name of the variable holding the key
    else:
        api_key = API_KEY_VARIABLE  # DD_ASSETS_LLM_API_KEY holds the key itself
    return {
        "name": PROVIDER_NAME,
        "endpoint": endpoint,
        "provider_type": os.environ.get("DD_ASSETS_LLM_PROVIDER_TYPE", "openai"),
        "api_key": api_key,
    }


def model_config() -> dd.ModelConfig:
    return dd.ModelConfig(
        alias=MODEL_ALIAS,
        model=os.environ.get("DD_ASSETS_LLM_MODEL", DEFAULT_MODEL),
        provider=PROVIDER_NAME,
        inference_parameters=dd.ChatCompletionInferenceParams(temperature=0.2, max_tokens=256),
    )


def drafts_config() -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder(model_configs=[model_config()])
    builder.with_seed_dataset(dd.LocalFileSeedSource(path=str(passages_path())))
    builder.add_column(
        dd.LLMTextColumnConfig(
            name="chunk_summary", model_alias=MODEL_ALIAS, prompt="Summarize this passage:\n\n{{ text }}"
        )
    )
    builder.add_column(
        dd.LLMTextColumnConfig(
            name="question",
            model_alias=MODEL_ALIAS,
            prompt="Write a question about this passage:\n\n{{ chunk_summary }}",
        )
    )
    builder.add_column(
        dd.LLMTextColumnConfig(
            name="answer", model_alias=MODEL_ALIAS, prompt="Answer {{ question }} using this passage:\n\n{{ text }}"
        )
    )
    return builder


def chatml_config() -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder(model_configs=[model_config()])
    builder.add_processor(
        dd.SchemaTransformProcessorConfig(
            name="chatml",
            template={
                "messages": [
                    {"role": "user", "content": "{{ question }}"},
                    {"role": "assistant", "content": "{{ answer }}"},
                ]
            },
        )
    )
    return builder


def doc_qa_workflow(num_records: int | None = None) -> Workflow:
    """The ``doc_qa`` workflow (``num_records`` defaults to one record per shipped passage)."""
    return Workflow(
        name="doc_qa",
        stages=[
            Stage(
                name="drafts",
                config=drafts_config(),
                num_records=num_records,
                output_processors=[
                    dd.DropColumnsProcessorConfig(name="drop_scratch", column_names=["text", "chunk_summary"])
                ],
                description=(
                    "Summary, question and answer for each seed passage; scratch columns dropped. Needs an LLM "
                    "endpoint: set DD_ASSETS_LLM_ENDPOINT (and DD_ASSETS_LLM_API_KEY), see the README."
                ),
            ),
            Stage(
                name="chatml",
                config=chatml_config(),
                depends_on=["drafts"],
                output="processor:chatml",
                description="Question/answer pairs as ChatML messages.",
            ),
        ],
    )
