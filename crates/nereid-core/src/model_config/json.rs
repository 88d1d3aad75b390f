//! The model config as JSON, the way Triton's `ModelConfigToJson` / `JsonToModelConfig` do it:
//! protobuf's JSON mapping with proto field names, every primitive field printed, fields in
//! declaration order, 64-bit integers as numbers, enum names matched case-insensitively.

use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage, Value as Field};
use serde_json::{Map, Number, Value};

/// Renders a message; unset message fields and unset oneof members are left out, as
/// protobuf's printer does with `always_print_primitive_fields`.
pub(super) fn render(message: &DynamicMessage) -> Value {
    let desc = message.descriptor();
    let mut object = Map::new();
    // `fields()` goes by field number; Triton prints in declaration order.
    for number in desc.descriptor_proto().field.iter().map(|f| f.number() as u32) {
        let Some(field) = desc.get_field(number) else {
            continue;
        };
        if field.supports_presence() && !message.has_field(&field) {
            continue;
        }
        object.insert(field.name().to_owned(), render_value(&message.get_field(&field), &field.kind()));
    }
    Value::Object(object)
}

fn render_value(value: &Field, kind: &Kind) -> Value {
    match value {
        Field::Bool(v) => (*v).into(),
        Field::I32(v) => (*v).into(),
        Field::I64(v) => (*v).into(),
        Field::U32(v) => (*v).into(),
        Field::U64(v) => (*v).into(),
        // Through its shortest decimal form, so 0.1f prints as 0.1 as protobuf does.
        Field::F32(v) => render_float(v.to_string().parse().unwrap_or(f64::from(*v))),
        Field::F64(v) => render_float(*v),
        Field::String(v) => v.as_str().into(),
        Field::Bytes(v) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(v).into()
        }
        Field::EnumNumber(number) => match kind.as_enum().and_then(|e| e.get_value(*number)) {
            Some(enum_value) => enum_value.name().into(),
            None => (*number).into(),
        },
        Field::Message(message) => render(message),
        Field::List(items) => items.iter().map(|item| render_value(item, kind)).collect(),
        Field::Map(entries) => {
            let value_kind = kind.as_message().map(|entry| entry.map_entry_value_field().kind());
            let value_kind = value_kind.unwrap_or_else(|| kind.clone());
            let mut entries: Vec<(String, &Field)> =
                entries.iter().map(|(key, value)| (map_key(key), value)).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let object = entries.into_iter().map(|(key, value)| (key, render_value(value, &value_kind)));
            Value::Object(object.collect())
        }
    }
}

/// Protobuf prints integral floats without a fraction and non-finite ones as strings.
fn render_float(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return (v as i64).into();
    }
    match Number::from_f64(v) {
        Some(number) => Value::Number(number),
        None if v.is_nan() => "NaN".into(),
        None if v > 0.0 => "Infinity".into(),
        None => "-Infinity".into(),
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(v) => v.to_string(),
        MapKey::I32(v) => v.to_string(),
        MapKey::I64(v) => v.to_string(),
        MapKey::U32(v) => v.to_string(),
        MapKey::U64(v) => v.to_string(),
        MapKey::String(v) => v.clone(),
    }
}

/// Triton parses with `case_insensitive_enum_parsing`: an enum name that does not match is
/// tried again in upper case.
pub(super) fn upper_case_enums(value: &mut Value, desc: &MessageDescriptor) {
    let Value::Object(object) = value else { return };
    for (name, value) in object.iter_mut() {
        let Some(field) = desc.get_field_by_name(name).or_else(|| desc.get_field_by_json_name(name)) else {
            continue;
        };
        let kind = match field.kind().as_message() {
            Some(entry) if field.is_map() => entry.map_entry_value_field().kind(),
            _ => field.kind(),
        };
        let items: Vec<&mut Value> = match value {
            Value::Array(items) if field.is_list() => items.iter_mut().collect(),
            Value::Object(entries) if field.is_map() => entries.values_mut().collect(),
            other => vec![other],
        };
        for item in items {
            match (&kind, item) {
                (Kind::Enum(_), Value::String(name)) => name.make_ascii_uppercase(),
                (Kind::Message(message), item) => upper_case_enums(item, message),
                _ => {}
            }
        }
    }
}
