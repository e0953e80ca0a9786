import azure.durable_functions as df


def entity_function(context: df.DurableEntityContext):
    value = context.get_state(lambda: 0)
    operation = context.operation_name
    if operation == "add":
        value += context.get_input()
    elif operation == "reset":
        value = 0
    elif operation == "get":
        context.set_result(value)
    elif operation == "fail":
        context.set_state(value + 1000)
        raise ValueError("nope")
    elif operation == "delete":
        context.destruct_on_exit()
        return
    context.set_state(value)


main = df.Entity.create(entity_function)
