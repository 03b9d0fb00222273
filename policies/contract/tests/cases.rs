//! The cross-check table through the mutation step itself; the host and the SDK
//! run the same table through their own paths.

use std::borrow::Cow;

use stsguard_contract::cases;
use stsguard_contract::mutation;

#[test]
fn the_mutation_step_gives_what_the_table_says() {
    let (request, cases) = cases::table();
    assert!(cases.len() >= 20, "the table lost its cases");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let mut object = Cow::Borrowed(&request["object"]);
            let result = mutation::apply(&mut object, case.mutation())
                .map(|changed| changed.then(|| object.into_owned()))
                .map_err(|error| error.to_string());
            case.check(result).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
