"""``quickstart``: an offline workflow (samplers, expressions, processors) with a branch and a join.

    customers ──► orders ──┐
              └─► tickets ─┴─(zip)─► customer_360 ──► export (processor-only, output="processor:records")

No model is called, so it runs without an API key.
"""

from __future__ import annotations

import data_designer.config as dd

from dd_assets.spec.workflow import Stage, Workflow

NUM_CUSTOMERS = 300


def _category(name: str, values: list[str]) -> dd.SamplerColumnConfig:
    return dd.SamplerColumnConfig(name=name, sampler_type="category", params=dd.CategorySamplerParams(values=values))


def _uniform_int(name: str, low: int, high: int) -> dd.SamplerColumnConfig:
    return dd.SamplerColumnConfig(
        name=name, sampler_type="uniform", params=dd.UniformSamplerParams(low=low, high=high), convert_to="int"
    )


def customers_config() -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder()
    builder.add_column(dd.SamplerColumnConfig(name="customer_id", sampler_type="uuid", params=dd.UUIDSamplerParams()))
    builder.add_column(_category("region", ["north", "south", "east", "west"]))
    builder.add_column(_category("segment", ["consumer", "smb", "enterprise"]))
    builder.add_column(_uniform_int("tenure_years", 0, 20))
    builder.add_column(dd.ExpressionColumnConfig(name="customer_label", expr="{{ segment }}/{{ region }}"))
    return builder


def orders_config() -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder()
    builder.add_column(_category("product", ["laptop", "monitor", "keyboard", "headset"]))
    builder.add_column(_uniform_int("quantity", 1, 5))
    builder.add_column(_uniform_int("unit_price", 20, 900))
    builder.add_column(dd.ExpressionColumnConfig(name="order_total", expr="{{ quantity * unit_price }}", dtype="int"))
    return builder


def tickets_config() -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder()
    builder.add_column(_category("channel", ["email", "chat", "phone"]))
    builder.add_column(_category("priority", ["low", "normal", "urgent"]))
    builder.add_column(
        dd.ExpressionColumnConfig(
            name="ticket_subject",
            expr="{{ priority | upper }}: {{ segment }} customer in the {{ region }} via {{ channel }}",
        )
    )
    return builder


def customer_360_config() -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder()
    builder.add_column(
        dd.ExpressionColumnConfig(
            name="profile",
            expr="{{ customer_label }} bought {{ quantity }} x {{ product }} ({{ order_total }}); "
            "last ticket: {{ ticket_subject }}",
        )
    )
    builder.add_column(
        dd.ExpressionColumnConfig(
            name="needs_follow_up", expr="{{ priority == 'urgent' or order_total > 2000 }}", dtype="bool"
        )
    )
    return builder


def export_config() -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder()
    builder.add_processor(
        dd.SchemaTransformProcessorConfig(
            name="records",
            template={"id": "{{ customer_id }}", "summary": "{{ profile }}", "follow_up": "{{ needs_follow_up }}"},
        )
    )
    return builder


def quickstart_workflow() -> Workflow:
    """The ``quickstart`` workflow."""
    return Workflow(
        name="quickstart",
        stages=[
            Stage(
                name="customers",
                config=customers_config(),
                num_records=NUM_CUSTOMERS,
                description="Synthetic customers: ids, regions, segments and tenure.",
            ),
            Stage(
                name="orders",
                config=orders_config(),
                depends_on=["customers"],
                output_processors=[dd.DropColumnsProcessorConfig(name="drop_pricing", column_names=["unit_price"])],
                description="One order per customer; the unit price is scratch and dropped at the stage boundary.",
            ),
            Stage(
                name="tickets",
                config=tickets_config(),
                depends_on=["customers"],
                description="One support ticket per customer.",
            ),
            Stage(
                name="customer_360",
                config=customer_360_config(),
                depends_on=["orders", "tickets"],
                combine="zip",
                description="Orders and tickets side by side (zip: the customer columns pass through both).",
            ),
            Stage(
                name="export",
                config=export_config(),
                depends_on=["customer_360"],
                output="processor:records",
                description="Processor-only stage: the export schema handed downstream.",
            ),
        ],
    )
