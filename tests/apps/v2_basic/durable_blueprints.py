import azure.durable_functions as df

bp = df.Blueprint()


@bp.entity_trigger(context_name="context", entity_name="Counter")
def counter(context: df.DurableEntityContext) -> None:
    value = context.get_state(lambda: 0)
    if context.operation_name == "add":
        value += context.get_input()
    context.set_state(value)
    context.set_result(value)


@bp.orchestration_trigger(context_name="context", orchestration="CountTwice")
def count_twice(context: df.DurableOrchestrationContext):
    entity = df.EntityId("Counter", "shared")
    yield context.call_entity(entity, "add", 1)
    total = yield context.call_entity(entity, "add", 1)
    return (yield context.call_activity(shout, str(total)))


@bp.activity_trigger(input_name="text")
async def shout(text: str) -> str:
    return text.upper() + "!"
