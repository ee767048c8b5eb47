// The user-assigned managed identity the Container App runs as: every data-plane role of the app is
// granted to it, and the app finds it through AZURE_CLIENT_ID (azure-identity's DefaultAzureCredential).

@description('Name of the identity')
param name string

@description('Region')
param location string

@description('Tags')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
