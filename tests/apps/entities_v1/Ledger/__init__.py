import azure.durable_functions as df


def entity_function(context: df.DurableEntityContext):
    entries = context.get_state(list)
    context.set_state(entries)  # from here on, `entries` is the live state
    entries.append(context.get_input())
    if context.operation_name == "push_then_fail":
        raise RuntimeError("refused after changing the state in place")
    context.set_result(len(entries))


main = df.Entity.create(entity_function)
