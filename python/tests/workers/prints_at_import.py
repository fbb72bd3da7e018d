print("printed while the module was imported")


def fn(record):
    return {"ok": record.get("id")}
