//! Domain enums stored by name in `text` columns.
//!
//! [`text_enum!`](crate::text_enum) gives a type with `as_str(self) -> &'static str` and
//! `parse(&str)` (returning `Option<Self>` or `Result<Self, _>`) the sqlx traits to bind and read it as `text`. A name
//! the type does not know fails to decode with an error naming it: a corrupt row is an
//! error, never read as some default. The domain module keeps its rules free of sqlx;
//! the service's `db` module invokes the macro.

#[doc(hidden)]
pub use sqlx as __sqlx;

/// What a `parse` returns: `Option` or `Result`, either way the value if it was a name.
#[doc(hidden)]
pub trait Parsed<T> {
    fn parsed(self) -> Option<T>;
}

impl<T> Parsed<T> for Option<T> {
    fn parsed(self) -> Option<T> {
        self
    }
}

impl<T, E> Parsed<T> for Result<T, E> {
    fn parsed(self) -> Option<T> {
        self.ok()
    }
}

/// Implements `sqlx::Type`, `Encode` and `Decode` for PostgreSQL `text` through the
/// type's `as_str` and `parse`.
#[macro_export]
macro_rules! text_enum {
    ($($ty:ty),+ $(,)?) => {$(
        impl $crate::sql_enum::__sqlx::Type<$crate::sql_enum::__sqlx::Postgres> for $ty {
            fn type_info() -> $crate::sql_enum::__sqlx::postgres::PgTypeInfo {
                <&str as $crate::sql_enum::__sqlx::Type<$crate::sql_enum::__sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &$crate::sql_enum::__sqlx::postgres::PgTypeInfo) -> bool {
                <&str as $crate::sql_enum::__sqlx::Type<$crate::sql_enum::__sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> $crate::sql_enum::__sqlx::Decode<'r, $crate::sql_enum::__sqlx::Postgres> for $ty {
            fn decode(
                value: $crate::sql_enum::__sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, $crate::sql_enum::__sqlx::error::BoxDynError> {
                let name = <&str as $crate::sql_enum::__sqlx::Decode<$crate::sql_enum::__sqlx::Postgres>>::decode(value)?;
                $crate::sql_enum::Parsed::parsed(<$ty>::parse(name)).ok_or_else(|| {
                    format!("{name:?} is not a {}", stringify!($ty)).into()
                })
            }
        }

        impl $crate::sql_enum::__sqlx::Encode<'_, $crate::sql_enum::__sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::sql_enum::__sqlx::postgres::PgArgumentBuffer,
            ) -> Result<$crate::sql_enum::__sqlx::encode::IsNull, $crate::sql_enum::__sqlx::error::BoxDynError> {
                <&str as $crate::sql_enum::__sqlx::Encode<$crate::sql_enum::__sqlx::Postgres>>::encode_by_ref(
                    &self.as_str(),
                    buf,
                )
            }
        }
    )+};
}
