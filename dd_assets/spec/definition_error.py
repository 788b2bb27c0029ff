"""The one error of a wrong declaration: it names the file, the workflow, the stage and the field."""

from __future__ import annotations


class WorkflowDefinitionError(ValueError):
    """A workflow or stage is declared wrongly. The message names the file, the workflow, the stage and the field."""

    def __init__(
        self,
        message: str,
        *,
        workflow: str | None = None,
        stage: str | None = None,
        field: str | None = None,
        file: str | None = None,
    ):
        self.reason, self.workflow, self.stage, self.field, self.file = message, workflow, stage, field, file
        where = []
        if file is not None:
            where.append(f"{file}:")
        if workflow is not None:
            where.append(f"workflow {workflow!r}")
        if stage is not None:
            where.append(f"stage {stage!r}")
        if field is not None:
            where.append(f"field {field!r}")
        head = ", ".join(w for w in where if not w.endswith(":"))
        prefix = f"{file}: " if file is not None else ""
        super().__init__(f"{prefix}{head}: {message}" if head else f"{prefix}{message}")

    def with_file(self, file: str) -> WorkflowDefinitionError:
        """The same error, naming the file it came from."""
        return WorkflowDefinitionError(
            self.reason, workflow=self.workflow, stage=self.stage, field=self.field, file=file
        )
