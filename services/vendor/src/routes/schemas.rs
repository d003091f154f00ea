//! The exact schemas of the request fields and query parameters, built from the rules in
//! [`crate::domain`] (`#[schema(schema_with = ...)]`, `#[param(schema_with = ...)]`), so
//! the API document accepts what the handlers accept and nothing else.

use mp_events::Currency;
use utoipa::openapi::Object;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};

use crate::domain::{
    DESCRIPTION_MAX, DESCRIPTION_PATTERN, NAME_PATTERN, PRICE_MAX, PRODUCT_NAME_MAX, QUANTITY_MAX,
    QUERY_MAX, QUERY_PATTERN, SKU_MAX, SKU_PATTERN, VENDOR_NAME_MAX,
};

fn kind(t: Type, nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([t, Type::Null])
    } else {
        SchemaType::Type(t)
    }
}

const UNCHANGED: &str = " `null` or absent: unchanged.";

fn name(max: usize, nullable: bool, example: &str) -> Object {
    let mut description = format!(
        "1 to {max} characters, not only white space, no control characters; kept trimmed."
    );
    if nullable {
        description.push_str(UNCHANGED);
    }
    ObjectBuilder::new()
        .schema_type(kind(Type::String, nullable))
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(NAME_PATTERN))
        .description(Some(description))
        .examples([example])
        .build()
}

pub fn vendor_name() -> Object {
    name(VENDOR_NAME_MAX, false, "Tea & Cups")
}

pub fn vendor_name_change() -> Object {
    name(VENDOR_NAME_MAX, true, "Tea & Cups")
}

pub fn product_name() -> Object {
    name(PRODUCT_NAME_MAX, false, "Blue mug, 350 ml")
}

pub fn product_name_change() -> Object {
    name(PRODUCT_NAME_MAX, true, "Blue mug, 350 ml")
}

/// Where orders and stock alerts are sent.
pub fn vendor_email() -> Object {
    let mut email = mp_common::contact::email_schema();
    email.description = Some("Where orders and stock alerts are sent.".into());
    email
}

pub fn vendor_email_change() -> Object {
    let mut email = vendor_email();
    email.schema_type = kind(Type::String, true);
    email.description = Some(format!(
        "Where orders and stock alerts are sent.{UNCHANGED}"
    ));
    email
}

pub fn phone() -> Object {
    let mut phone = mp_common::contact::optional_phone_schema();
    phone.description =
        Some("International form, e.g. `+4930123456`; `null` or absent: no phone number.".into());
    phone
}

pub fn phone_change() -> Object {
    let mut phone = mp_common::contact::optional_phone_schema();
    phone.description = Some(
        "International form, e.g. `+4930123456`; `null` removes the phone number; absent: unchanged."
            .into(),
    );
    phone
}

pub fn sku() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(SKU_PATTERN))
        .description(Some(format!(
            "Unique within the vendor, whatever the letter case: 1 to {SKU_MAX} letters, digits or `-_./`; white space around them is dropped.",
        )))
        .examples(["MUG-350-BLUE"])
        .build()
}

fn description(nullable: bool) -> Object {
    let mut text = format!(
        "At most {DESCRIPTION_MAX} characters; line breaks and tabs allowed, other control characters not; kept trimmed."
    );
    if nullable {
        text.push_str(UNCHANGED);
    } else {
        text.push_str(" Absent: empty.");
    }
    ObjectBuilder::new()
        .schema_type(kind(Type::String, nullable))
        .max_length(Some(DESCRIPTION_MAX))
        .pattern(Some(DESCRIPTION_PATTERN))
        .description(Some(text))
        .examples(["Stoneware, dishwasher safe."])
        .build()
}

pub fn product_description() -> Object {
    description(false)
}

pub fn product_description_change() -> Object {
    description(true)
}

/// The ISO 4217 codes [`Currency::parse`] accepts, in order.
fn currencies() -> Vec<String> {
    let letters = || b'A'..=b'Z';
    letters()
        .flat_map(|a| letters().flat_map(move |b| letters().map(move |c| [a, b, c])))
        .filter_map(|code| String::from_utf8(code.to_vec()).ok())
        .filter(|code| Currency::parse(code).is_ok())
        .collect()
}

fn price(nullable: bool) -> Object {
    let amount = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(1))
        .maximum(Some(PRICE_MAX))
        .description(Some(
            "Minor units (cents for EUR): more than zero, at most 1000000000000.",
        ));
    let currency = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(currencies()))
        .description(Some("ISO 4217 code, upper case."));
    let mut text =
        "The price, in minor units of an ISO 4217 currency (the currency is the product's own; carts and orders keep it).".to_owned();
    if nullable {
        text.push_str(UNCHANGED);
    }
    ObjectBuilder::new()
        .schema_type(kind(Type::Object, nullable))
        .property("amount", amount)
        .required("amount")
        .property("currency", currency)
        .required("currency")
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ))
        .description(Some(text))
        .examples([serde_json::json!({"amount": 1999, "currency": "EUR"})])
        .build()
}

pub fn product_price() -> Object {
    price(false)
}

pub fn product_price_change() -> Object {
    price(true)
}

fn quantity(nullable: bool, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(kind(Type::Integer, nullable))
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(0))
        .maximum(Some(QUANTITY_MAX))
        .description(Some(description))
        .build()
}

pub fn initial_stock() -> Object {
    quantity(
        false,
        "Stock the inventory item starts with: 0 to 1000000000.",
    )
}

pub fn low_stock_threshold() -> Object {
    quantity(
        false,
        "Available stock at or below which the vendor is alerted: 0 to 1000000000.",
    )
}

pub fn low_stock_threshold_change() -> Object {
    quantity(
        true,
        "Available stock at or below which the vendor is alerted: 0 to 1000000000. `null` or absent: unchanged.",
    )
}

pub fn active_change() -> Object {
    ObjectBuilder::new()
        .schema_type(kind(Type::Boolean, true))
        .description(Some(
            "Inactive products stay readable by id but leave the public catalog. `null` or absent: unchanged.",
        ))
        .build()
}

/// The `limit` query parameter of every list here.
pub fn limit() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int32,
        )))
        .minimum(Some(1))
        .maximum(Some(mp_common::page::MAX_LIMIT))
        .description(Some("How many items, 1 to 100 (default 20)."))
        .build()
}

/// The `cursor` query parameter, as [`mp_common::page::PageQuery`] documents it.
pub fn cursor() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(512))
        .pattern(Some("^[A-Za-z0-9_-]+$"))
        .description(Some(
            "`next_cursor` of the previous page (opaque: only a value the API returned).",
        ))
        .build()
}

/// The `q` search text of the product lists.
pub fn search_text() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(QUERY_MAX))
        .pattern(Some(QUERY_PATTERN))
        .description(Some(
            "Text found in the name, SKU or description, in any letter case: at most 200 characters, no control characters; searched for trimmed; empty: no filter.",
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_the_valid_iso_codes() {
        let codes = currencies();
        assert!(codes.len() > 150, "{}", codes.len());
        for code in ["EUR", "USD", "JPY", "CHF"] {
            assert!(codes.iter().any(|c| c == code), "{code}");
        }
        assert!(!codes.iter().any(|c| c == "XXQ"), "no code ISO 4217 lacks");
    }
}
